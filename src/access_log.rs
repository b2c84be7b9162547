//! access_log: owns the one-line-per-request access log — its two formats (text in the process
//! log's shape, or JSON lines) and the writer it goes to. It only formats what the proxy hands it;
//! it never looks at the topology.
//!
//! Why not a `tracing` event: formatted by `tracing-subscriber`, one access line costs a large
//! share of everything lb does for a proxied request (callgrind under wrk; bench/RESULTS.md). Here
//! the line is written straight into the buffer the log thread receives, in the text and JSON
//! shapes of `tracing-subscriber`'s formats, so the access lines read like the process log.
//!
//! The time is RFC 3339 in UTC. Its date and time of day come from `humantime`, formatted once a
//! second per thread and reused; each line adds only the microseconds. With this cache the crate
//! costs the request path nothing measurable against a hand-written formatter, and formatting
//! every line with `humantime::format_rfc3339_micros` instead would cost several times more
//! (bench/timestamp; the figures are in bench/RESULTS.md).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

use crate::log_writer::BatchWriter;

/// Where access lines go, and in which format. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    /// `None`: access logging is off.
    out: Option<BatchWriter>,
    json: bool,
}

/// One proxied (or locally answered) request.
#[derive(Debug)]
pub struct Line<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The subject of the certificate the client presented over TLS (`[tls] client_ca`),
    /// verified; `None` without one.
    pub client_cert: Option<&'a str>,
    /// The request method.
    pub method: &'a Method,
    /// The request path, without the query.
    pub path: &'a str,
    /// The status code sent to the client.
    pub status: u16,
    /// The pool's pattern; `None` when no pool matched.
    pub pool: Option<&'a str>,
    /// `IP:PORT` of the backend that answered, if one did.
    pub backend: Option<&'a str>,
    /// How long the request has been in lb when the line is written.
    pub duration: Duration,
    /// The `[server]` timeout that cut this response short (a second line for the request, after
    /// the one its head got); `None` on every ordinary line.
    pub timeout: Option<&'a str>,
    /// Why lb answered itself after a backend failed (the error and its causes, e.g. `cannot
    /// connect to 10.0.0.5:8443: TLS handshake: unknown issuer`); `None` otherwise.
    pub error: Option<&'a str>,
}

impl AccessLog {
    /// No access log.
    pub fn off() -> AccessLog {
        AccessLog::default()
    }

    /// Lines to `out`, as JSON objects when `json`, else as text.
    pub fn new(out: BatchWriter, json: bool) -> AccessLog {
        AccessLog {
            out: Some(out),
            json,
        }
    }

    /// Formats and queues one line; never blocks (see [`BatchWriter`]).
    pub fn write(&self, line: &Line<'_>) {
        if let Some(out) = &self.out {
            // An empty Vec is valid UTF-8; the fallback never runs.
            let mut buf = String::from_utf8(out.buffer()).unwrap_or_default();
            line.format(&mut buf, self.json, SystemTime::now());
            out.send(buf.into_bytes());
        }
    }
}

impl Line<'_> {
    /// Text: `TIME  INFO lb::access: client=… method=… path="…" status=… pool="…" backend=…
    /// duration_ms=…` (then `timeout=…`, `error="…"` and `client_cert="…"` when there are
    /// such), as
    /// `tracing-subscriber`'s default format printed it. JSON: its JSON
    /// format, `{"timestamp":…,"level":"INFO","fields":{…},"target":"lb::access"}`.
    fn format(&self, buf: &mut String, json: bool, now: SystemTime) {
        let mut numbers = itoa::Buffer::new();
        if json {
            buf.push_str("{\"timestamp\":\"");
            push_timestamp(buf, now);
            buf.push_str("\",\"level\":\"INFO\",\"fields\":{\"client\":\"");
            push_socket_addr(buf, self.client);
            buf.push_str("\",\"method\":");
            push_json_str(buf, self.method.as_str());
            buf.push_str(",\"path\":");
            push_json_str(buf, self.path);
            buf.push_str(",\"status\":");
            buf.push_str(numbers.format(self.status));
            buf.push_str(",\"pool\":");
            push_json_str(buf, self.pool.unwrap_or("-"));
            buf.push_str(",\"backend\":");
            push_json_str(buf, self.backend.unwrap_or("-"));
            buf.push_str(",\"duration_ms\":");
            push_millis(buf, self.duration);
            if let Some(timeout) = self.timeout {
                buf.push_str(",\"timeout\":");
                push_json_str(buf, timeout);
            }
            if let Some(error) = self.error {
                buf.push_str(",\"error\":");
                push_json_str(buf, error);
            }
            if let Some(subject) = self.client_cert {
                buf.push_str(",\"client_cert\":");
                push_json_str(buf, subject);
            }
            buf.push_str("},\"target\":\"lb::access\"}\n");
        } else {
            push_timestamp(buf, now);
            buf.push_str("  INFO lb::access: client=");
            push_socket_addr(buf, self.client);
            buf.push_str(" method=");
            buf.push_str(self.method.as_str());
            buf.push_str(" path=");
            push_quoted(buf, self.path);
            buf.push_str(" status=");
            buf.push_str(numbers.format(self.status));
            buf.push_str(" pool=");
            push_quoted(buf, self.pool.unwrap_or("-"));
            buf.push_str(" backend=");
            buf.push_str(self.backend.unwrap_or("-"));
            buf.push_str(" duration_ms=");
            push_millis(buf, self.duration);
            if let Some(timeout) = self.timeout {
                buf.push_str(" timeout=");
                buf.push_str(timeout);
            }
            if let Some(error) = self.error {
                buf.push_str(" error=");
                push_quoted(buf, error);
            }
            if let Some(subject) = self.client_cert {
                buf.push_str(" client_cert=");
                push_quoted(buf, subject);
            }
            buf.push('\n');
        }
    }
}

/// True when `s` can be written between quotes as is, in Rust's Debug and in JSON alike.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `s` quoted and escaped as `{:?}` does (the text format's string fields).
fn push_quoted(buf: &mut String, s: &str) {
    if plain(s) {
        buf.push('"');
        buf.push_str(s);
        buf.push('"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// `s` as a JSON string.
fn push_json_str(buf: &mut String, s: &str) {
    if plain(s) {
        buf.push('"');
        buf.push_str(s);
        buf.push('"');
        return;
    }
    // Rare (a path or pattern with quotes, backslashes or control characters): serde_json's
    // escaping, which cannot fail for a string.
    buf.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

fn push_socket_addr(buf: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(buf, IpAddr::V4(*v4.ip()));
            buf.push(':');
            buf.push_str(itoa::Buffer::new().format(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(buf, "{addr}");
        }
    }
}

/// An address as `Display` writes it. IPv4 goes without `fmt`: its `Display` runs a `Formatter`
/// per octet, and every request formats the client address twice (here and
/// in `X-Forwarded-For`).
pub(crate) fn push_ip(buf: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push('.');
                }
                buf.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// An address as `Display` writes it, in a string of its own (see [`push_ip`]).
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    push_ip(&mut text, ip);
    text
}

/// Milliseconds with up to three decimals and no trailing zeros (`0.46`, `12`, `3.005`), as an
/// `f64` of whole microseconds / 1000 prints.
fn push_millis(buf: &mut String, duration: Duration) {
    let micros = duration.as_micros();
    let mut numbers = itoa::Buffer::new();
    buf.push_str(numbers.format(micros / 1000));
    let mut fraction = (micros % 1000) as u32;
    if fraction == 0 {
        return;
    }
    let mut digits = 3;
    while fraction % 10 == 0 {
        fraction /= 10;
        digits -= 1;
    }
    buf.push('.');
    push_padded(buf, fraction, digits);
}

/// `n` in exactly `width` digits, zero-padded.
fn push_padded(buf: &mut String, n: u32, width: u32) {
    let mut divisor = 10u32.pow(width.saturating_sub(1));
    while divisor > 0 {
        buf.push(char::from(b'0' + ((n / divisor) % 10) as u8));
        divisor /= 10;
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-30T05:00:22.459814Z`.
fn push_timestamp(buf: &mut String, now: SystemTime) {
    use std::cell::RefCell;
    // Everything up to the seconds changes once a second: formatted once a second per thread.
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    // A clock before 1970 prints as the epoch rather than failing the request.
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            second.1.clear();
            push_second(&mut second.1, secs);
            second.0 = secs;
        }
        buf.push_str(&second.1);
    });
    buf.push('.');
    push_padded(buf, since_epoch.subsec_micros(), 6);
    buf.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a time `secs` after the epoch, by `humantime`'s RFC 3339 formatter
/// (the calendar arithmetic is its). Runs once a second per thread (see [`push_timestamp`]).
fn push_second(buf: &mut String, secs: u64) {
    // humantime formats years up to 9999 only; a clock past that prints as its last second.
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    let time = UNIX_EPOCH + Duration::from_secs(secs.min(LAST_SECOND_OF_9999));
    let _ = write!(buf, "{}", humantime::format_rfc3339_seconds(time));
    // `...SSZ`: the fraction and the zone follow in `push_timestamp`.
    buf.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str, pool: Option<&str>, micros: u64) -> Line<'static> {
        Line {
            client: "127.0.0.1:5555".parse().unwrap(),
            method: &Method::GET,
            path: Box::leak(path.to_owned().into_boxed_str()),
            status: 200,
            pool: pool.map(|p| &*Box::leak(p.to_owned().into_boxed_str())),
            backend: pool.map(|_| "127.0.0.1:8082"),
            duration: Duration::from_micros(micros),
            timeout: None,
            error: None,
            client_cert: None,
        }
    }

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "192.0.2.7",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let mut out = String::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip);
        }
    }

    #[test]
    fn text_lines_keep_the_process_log_shape() {
        let mut buf = String::new();
        line("/a b", Some("/"), 460).format(&mut buf, false, at(1_796_016_022, 459_814));
        assert_eq!(
            buf,
            "2026-11-30T05:20:22.459814Z  INFO lb::access: client=127.0.0.1:5555 method=GET \
             path=\"/a b\" status=200 pool=\"/\" backend=127.0.0.1:8082 duration_ms=0.46\n"
        );
        let mut buf = String::new();
        line("/q\"x", None, 12_000).format(&mut buf, false, at(0, 5));
        assert_eq!(
            buf,
            "1970-01-01T00:00:00.000005Z  INFO lb::access: client=127.0.0.1:5555 method=GET \
             path=\"/q\\\"x\" status=200 pool=\"-\" backend=- duration_ms=12\n"
        );
        // The same second again, after another: the cached seconds are the right ones.
        let mut buf = String::new();
        line("/", None, 1).format(&mut buf, false, at(1_796_016_022, 1));
        assert!(buf.starts_with("2026-11-30T05:20:22.000001Z "), "{buf}");
    }

    #[test]
    fn a_timeout_is_named_at_the_end_of_the_line() {
        let cut = Line {
            timeout: Some("read_timeout"),
            ..line("/a", Some("/"), 1)
        };
        let mut buf = String::new();
        cut.format(&mut buf, false, at(0, 0));
        assert!(
            buf.ends_with(" duration_ms=0.001 timeout=read_timeout\n"),
            "{buf}"
        );
        let mut buf = String::new();
        cut.format(&mut buf, true, at(0, 0));
        let json: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(json["fields"]["timeout"], "read_timeout");
    }

    #[test]
    fn a_client_certificate_subject_is_named_only_when_present() {
        let mut buf = String::new();
        line("/a", Some("/"), 1).format(&mut buf, false, at(0, 0));
        assert!(!buf.contains("client_cert"), "{buf}");
        let verified = Line {
            client_cert: Some("CN=alice, O=\"Ops\""),
            ..line("/a", Some("/"), 1)
        };
        let mut buf = String::new();
        verified.format(&mut buf, false, at(0, 0));
        assert!(
            buf.ends_with(" duration_ms=0.001 client_cert=\"CN=alice, O=\\\"Ops\\\"\"\n"),
            "{buf}"
        );
        let mut buf = String::new();
        verified.format(&mut buf, true, at(0, 0));
        let json: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(json["fields"]["client_cert"], "CN=alice, O=\"Ops\"");
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut buf = String::new();
        line("/é\"\u{1}", Some("GET example.com/{x}"), 3_005).format(
            &mut buf,
            true,
            at(951_782_400, 0), // 2000-02-29, a leap day
        );
        let value: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(value["timestamp"], "2000-02-29T00:00:00.000000Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "lb::access");
        let fields = &value["fields"];
        assert_eq!(fields["client"], "127.0.0.1:5555");
        assert_eq!(fields["method"], "GET");
        assert_eq!(fields["path"], "/é\"\u{1}");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["pool"], "GET example.com/{x}");
        assert_eq!(fields["backend"], "127.0.0.1:8082");
        assert_eq!(fields["duration_ms"], 3.005);
    }

    #[test]
    fn milliseconds_print_as_an_f64_of_them_would() {
        for micros in [0u64, 1, 10, 100, 460, 999, 1000, 1234, 27_598, 5_000_000] {
            let mut buf = String::new();
            push_millis(&mut buf, Duration::from_micros(micros));
            assert_eq!(buf, (micros as f64 / 1e3).to_string(), "{micros} µs");
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00"),
            (59 * 86_400 + 3_661, "1970-03-01T01:01:01"),
            (11_016 * 86_400, "2000-02-29T00:00:00"),
            (1_796_016_022, "2026-11-30T05:20:22"),
            (47_481 * 86_400 + 86_399, "2099-12-31T23:59:59"),
            (u64::MAX, "9999-12-31T23:59:59"),
        ] {
            let mut buf = String::new();
            push_second(&mut buf, secs);
            assert_eq!(buf, want, "{secs} s");
        }
    }

    #[test]
    fn ipv6_clients_print_with_brackets() {
        let mut buf = String::new();
        push_socket_addr(&mut buf, "[::1]:8080".parse().unwrap());
        assert_eq!(buf, "[::1]:8080");
    }
}
