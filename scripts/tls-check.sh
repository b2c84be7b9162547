#!/usr/bin/env bash
# Checks lb's HTTPS listener with the stock clients: curl (`--resolve`, TLS 1.2 and 1.3, ALPN
# http/1.1 and h2) and `openssl s_client` (SNI and no SNI, ALPN, both versions, the chain
# verified). Makes a test CA and two ECDSA P-256 certificates with openssl (a.test, and b.test as
# the default), starts sample-web and lb on loopback, and asserts what each client sees.
# Needs curl and openssl (installs them with apt-get when missing); builds lb itself.
# Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v curl >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl openssl >/dev/null
fi
cargo build --quiet --workspace --bins
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Waits up to 5 s for a line matching $2 in the log $1.
wait_for() {
  for _ in $(seq 1 100); do grep -q "$2" "$1" && return 0; sleep 0.05; done
  echo "tls-check: no \"$2\" in $1 after 5s" >&2; cat "$1" >&2; exit 1
}

# The CA and the two leaves (P-256, SAN DNS names, signed by the CA).
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
  -subj "/CN=tls-check CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
for name in a.test b.test; do
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=$name" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" > "$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/$name.ext" -out "$work/$name.pem" 2>/dev/null
  chmod 600 "$work/$name.key"
done

target/debug/sample-web --port 0 --node tls 2>"$work/backend.log" &
pids+=("$!")
wait_for "$work/backend.log" listening
backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
cat > "$work/lb.toml" <<TOML
[listen]
https = "127.0.0.1:0"

[[tls.certificates]]
cert = "a.test.pem"
key = "a.test.key"

[[tls.certificates]]
cert = "b.test.pem"
key = "b.test.key"
default = true

[pools."/"]
interval = "200ms"
backends = ["$backend"]
TOML
target/debug/lb --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 2>"$work/lb.log" &
pids+=("$!")
wait_for "$work/lb.log" 'listener="https"'
https=$(sed -n 's/.*listener="https" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
port=${https##*:}

passed=0; failed=0
check() { if "$@"; then passed=$((passed+1)); echo "ok   $label"; else failed=$((failed+1)); echo "FAIL $label"; fi; }

# curl: prints "HTTP_VERSION BODY" for https://a.test/ with the given flags.
get() {
  curl -sS --max-time 5 --cacert "$work/ca.pem" --resolve "a.test:$port:127.0.0.1" \
    -w ' %{http_version} %{response_code}' "$@" "https://a.test:$port/" 2>&1 || true
}
answers() { local out; out=$(get "${@:2}"); [[ "$out" == *"node tls"*" $1 200" ]] || { echo "  got: $out"; return 1; }; }
label="curl, TLS 1.2 only, HTTP/1.1";  check answers 1.1 --tlsv1.2 --tls-max 1.2 --http1.1
label="curl, TLS 1.3, HTTP/1.1";       check answers 1.1 --tlsv1.3 --http1.1
label="curl, TLS 1.2 only, ALPN h2";   check answers 2 --tlsv1.2 --tls-max 1.2 --http2
label="curl, TLS 1.3, ALPN h2";        check answers 2 --tlsv1.3 --http2

# openssl s_client: the handshake's summary for the given flags (no request is sent).
hello() {
  timeout 5 openssl s_client -connect "$https" -CAfile "$work/ca.pem" "$@" </dev/null 2>&1 || true
}
shows() { local out; out=$(hello "${@:2}"); grep -qF -- "$1" <<<"$out" || { echo "  no \"$1\" in:"; sed 's/^/    /' <<<"$out" | head -20; return 1; }; }
label="s_client SNI a.test gets a.test's certificate"; check shows "subject=CN = a.test" -servername a.test
label="s_client SNI a.test: the chain verifies";       check shows "Verify return code: 0 (ok)" -servername a.test -verify_hostname a.test
label="s_client without SNI gets the default, b.test"; check shows "subject=CN = b.test" -noservername
label="s_client unknown SNI gets the default";         check shows "subject=CN = b.test" -servername c.test
label="s_client ALPN h2";                              check shows "ALPN protocol: h2" -servername a.test -alpn h2
label="s_client ALPN http/1.1";                        check shows "ALPN protocol: http/1.1" -servername a.test -alpn http/1.1
label="s_client TLS 1.2";                              check shows "Protocol  : TLSv1.2" -servername a.test -tls1_2
label="s_client TLS 1.3";                              check shows "TLSv1.3" -servername a.test -tls1_3

echo "tls-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
