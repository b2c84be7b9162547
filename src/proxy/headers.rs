//! Header rewriting between client and backend, one set of rules for both protocols: hop-by-hop
//! removal (and what `Connection` names), `Host` and `X-Forwarded-*`, and the client's address
//! a trusted proxy's `X-Forwarded-For` gives ([`ForwardedClient`]).

use std::net::{IpAddr, SocketAddr};

use crate::config::Cidr;

use http::header::HeaderMap;
#[cfg(test)]
use http::header::{HeaderName, HeaderValue};

/// Whether `name`, in any case, names a field that describes one connection, not the message
/// (RFC 9110 §7.6.1: `Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), or the legacy
/// `Keep-Alive` and `Proxy-Connection`. The length decides first: most names have none of these
/// lengths.
pub(super) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    match name.len() {
        2 => name.eq_ignore_ascii_case(b"te"),
        7 => name.eq_ignore_ascii_case(b"trailer") || name.eq_ignore_ascii_case(b"upgrade"),
        10 => name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"keep-alive"),
        16 => name.eq_ignore_ascii_case(b"proxy-connection"),
        17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
        _ => false,
    }
}

/// The hop-by-hop rule, written once for requests and responses of both protocols: whether the
/// field `name` of a message stops at lb, being one of the [`is_hop_by_hop_name`] fields or one a
/// `Connection` field of the message names (all of them: a message may carry several).
///
/// `fields` gives the message's fields each time it is called; `names_others` is
/// [`connection_names_others`] of them, which spares the usual message (no `Connection`, or one
/// naming only `keep-alive` or `upgrade`) the look at its `Connection` fields per field.
pub fn is_hop_by_hop<'f, I>(name: &[u8], fields: impl Fn() -> I, names_others: bool) -> bool
where
    I: Iterator<Item = (&'f [u8], &'f [u8])>,
{
    is_hop_by_hop_name(name)
        || (names_others && connection_tokens(fields()).any(|t| t.eq_ignore_ascii_case(name)))
}

/// Whether a `Connection` field among `fields` names anything but hop-by-hop fields (see
/// [`is_hop_by_hop`]).
pub fn connection_names_others<'f>(fields: impl Iterator<Item = (&'f [u8], &'f [u8])>) -> bool {
    connection_tokens(fields).any(|t| !is_hop_by_hop_name(t))
}

/// Removes the hop-by-hop fields of a message held as a map (see [`is_hop_by_hop`]): the rule
/// the tests hold the bytes paths to. A message
/// without any (the usual one) is looked at once, name by name, and left alone.
#[cfg(test)]
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let fields = || {
        headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    };
    let names_others = connection_names_others(fields());
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str().as_bytes(), fields, names_others))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

/// What a forwarded request says about its client, besides the client's own fields.
pub struct Forwarding<'a> {
    /// The client's address as text (`X-Forwarded-For` gets it).
    pub client: &'a [u8],
    /// The host the request is for (an HTTP/1 `Host` or absolute-form authority, an HTTP/2
    /// `:authority`): the backend's `Host`, and `X-Forwarded-Host`.
    pub host: Option<&'a [u8]>,
    /// The client came over TLS: `X-Forwarded-Proto: https`, else `http`.
    pub https: bool,
    /// The client's own `X-Forwarded-For` goes on, `client` appended (no `trusted_proxies`, or
    /// a trusted peer); otherwise `client` alone, so an entry a client wrote never reaches a
    /// backend that believes lb (`Peer::keeps_forwarded_for`).
    pub keep_forwarded_for: bool,
}

/// The upstream header rules, for both protocols: writes to `out` the header lines (each ending
/// CRLF) a request goes to its backend with. The client's end-to-end fields go in order, except
/// hop-by-hop ones, those a `Connection` field names, `X-Forwarded-*` (set here) and the framing
/// and expectation fields (`Content-Length`, `Expect`: the caller frames the body it sends);
/// `Host` is the request's host, in the client's `Host` place or else first; then
/// `X-Forwarded-Host`, the client appended to `X-Forwarded-For` (or alone in it, without
/// `keep_forwarded_for`), and `X-Forwarded-Proto`.
///
/// `fields` gives the client's fields, as bytes, each time it is called (the rules read them
/// more than once; no list is built, so nothing is allocated).
pub fn push_upstream_fields<'f, I>(
    out: &mut Vec<u8>,
    fields: impl Fn() -> I,
    forwarding: &Forwarding<'_>,
) where
    I: Iterator<Item = (&'f [u8], &'f [u8])>,
{
    let connection_names_others = connection_names_others(fields());
    let client_has_host = fields().any(|(name, _)| name.eq_ignore_ascii_case(b"host"));
    if let (Some(host), false) = (forwarding.host, client_has_host) {
        push_field(out, b"host", host);
    }
    let mut host_sent = false;
    let mut forwarded_for_prior = false;
    for (name, value) in fields() {
        if name.eq_ignore_ascii_case(b"host") {
            // The request's host (an absolute-form target's authority replaces the client's
            // `Host`), once.
            if !host_sent {
                push_field(out, b"host", forwarding.host.unwrap_or(value));
                host_sent = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for_prior = true;
            continue;
        }
        let dropped = is_hop_by_hop(name, &fields, connection_names_others)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto");
        if !dropped {
            push_field(out, name, value);
        }
    }
    if let Some(host) = forwarding.host {
        push_field(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for_prior && forwarding.keep_forwarded_for {
        // Every earlier field's list, in order, then the client.
        for (name, value) in fields() {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                let prior = value.trim_ascii();
                if !prior.is_empty() {
                    out.extend_from_slice(prior);
                    out.extend_from_slice(b", ");
                }
            }
        }
    }
    out.extend_from_slice(forwarding.client);
    out.extend_from_slice(if forwarding.https {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
}

/// The client's address as a trusted proxy's `X-Forwarded-For` gives it: the right-most entry
/// that is not itself a trusted proxy (each proxy appends the peer it took the request from, so
/// the entries right of the client's are the trusted hops'), read from every `X-Forwarded-For`
/// field in order as one list (RFC 9110 §5.3). A malformed entry met before that one (walking
/// from the right) gives the peer's address: nothing left of it can be vouched for. A list of
/// trusted entries only gives its left-most; none gives the peer. Entries may carry a port
/// (`203.0.113.7:4711`, `[2001:db8::7]:4711`), as some proxies write them.
///
/// Fed left to right, value by value ([`ForwardedClient::feed`]): the right-most untrusted entry
/// is the last one seen, so no list is kept.
pub(super) struct ForwardedClient<'t> {
    trusted: &'t [Cidr],
    /// The first entry, for a list of trusted proxies only.
    first: Option<IpAddr>,
    /// The right-most entry so far that is not trusted, or `Malformed` when a malformed entry
    /// came after it.
    last: Last,
}

enum Last {
    None,
    Client(IpAddr),
    Malformed,
}

impl<'t> ForwardedClient<'t> {
    pub fn new(trusted: &'t [Cidr]) -> ForwardedClient<'t> {
        ForwardedClient {
            trusted,
            first: None,
            last: Last::None,
        }
    }

    /// One `X-Forwarded-For` field's value, after those before it.
    pub fn feed(&mut self, value: &[u8]) {
        // Empty list elements are ignored (RFC 9110 §5.6.1).
        for entry in list_tokens(value) {
            match forwarded_ip(entry) {
                None => self.last = Last::Malformed,
                Some(ip) => {
                    self.first.get_or_insert(ip);
                    if !self.trusted.iter().any(|net| net.contains(ip)) {
                        self.last = Last::Client(ip);
                    }
                }
            }
        }
    }

    /// The client's address, `peer` when the fields give none.
    pub fn client(&self, peer: IpAddr) -> IpAddr {
        match self.last {
            Last::Client(ip) => ip,
            Last::Malformed => peer,
            Last::None => self.first.unwrap_or(peer),
        }
    }
}

/// One `X-Forwarded-For` entry's address: an IP, or an IP and a port (IPv6 bracketed);
/// IPv4-mapped IPv6 as its IPv4 address. `None` for anything else (`unknown`, a name, an
/// obfuscated identifier).
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
            inner.unwrap_or_default().parse::<IpAddr>()
        })
        .ok()?;
    Some(ip.to_canonical())
}

/// The tokens of every `Connection` field among `fields`, trimmed, empty ones skipped.
fn connection_tokens<'f>(
    fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
) -> impl Iterator<Item = &'f [u8]> {
    fields
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| list_tokens(value))
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub(super) fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Appends one header line.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An HTTP/2 request's fields as [`push_upstream_fields`] reads them.
pub fn map_fields(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// [`push_upstream_fields`] of a map, read back into a map, for the tests. `None` if a line does
/// not read back (it cannot: every byte came from valid fields).
#[cfg(test)]
pub fn upstream_headers(
    client_headers: &HeaderMap,
    forwarding: &Forwarding<'_>,
) -> Option<HeaderMap> {
    let mut block = Vec::with_capacity(256);
    push_upstream_fields(&mut block, || map_fields(client_headers), forwarding);
    block.extend_from_slice(b"\r\n");
    let mut fields = vec![httparse::EMPTY_HEADER; client_headers.len() + 5];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&block, &mut fields)
    else {
        return None;
    };
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_only_them() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop_name(name.as_bytes()));
            assert!(is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()));
        }
        for name in [
            "host",
            "tee",
            "content-length",
            "x-connection",
            "connections",
            "",
        ] {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    fn upstream(h: &HeaderMap, client: &str, host: Option<&str>) -> HeaderMap {
        let forwarding = Forwarding {
            client: client.as_bytes(),
            host: host.map(str::as_bytes),
            https: false,
            keep_forwarded_for: true,
        };
        upstream_headers(h, &forwarding).unwrap()
    }

    #[test]
    fn an_untrusted_peer_s_forwarded_for_is_replaced_by_the_peer() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let forwarding = Forwarding {
            client: b"198.51.100.4",
            host: None,
            keep_forwarded_for: false,
            https: false,
        };
        let out = upstream_headers(&h, &forwarding).unwrap();
        let values: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(values, ["198.51.100.4"]);
    }

    fn client_by(trusted: &[&str], fields: &[&str], peer: &str) -> String {
        let trusted: Vec<Cidr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let mut client = ForwardedClient::new(&trusted);
        for value in fields {
            client.feed(value.as_bytes());
        }
        client.client(peer.parse().unwrap()).to_string()
    }

    #[test]
    fn the_client_is_the_right_most_forwarded_for_entry_that_is_not_a_trusted_proxy() {
        let trusted = ["10.0.0.0/8", "2001:db8:1::/48"];
        let peer = "10.0.0.1";
        // The standard case: the client, then trusted hops.
        assert_eq!(
            client_by(&trusted, &["203.0.113.7, 10.1.1.1"], peer),
            "203.0.113.7"
        );
        // Entries a client wrote left of its own address are not believed.
        assert_eq!(
            client_by(&trusted, &["1.1.1.1, 203.0.113.7", "10.2.2.2"], peer),
            "203.0.113.7"
        );
        // Ports, brackets, IPv4-mapped IPv6 and whitespace.
        assert_eq!(
            client_by(&trusted, &[" 203.0.113.7:4711 ,10.1.1.1"], peer),
            "203.0.113.7"
        );
        assert_eq!(
            client_by(&trusted, &["[2001:db8::7]:4711"], peer),
            "2001:db8::7"
        );
        assert_eq!(client_by(&trusted, &["[2001:db8::7]"], peer), "2001:db8::7");
        assert_eq!(
            client_by(&trusted, &["::ffff:203.0.113.7"], peer),
            "203.0.113.7"
        );
        assert_eq!(
            client_by(&trusted, &["2001:db8:2::9, 2001:db8:1::5"], peer),
            "2001:db8:2::9"
        );
        // No field, or an empty one: the peer itself.
        assert_eq!(client_by(&trusted, &[], peer), peer);
        // Only trusted proxies: the left-most of them.
        assert_eq!(
            client_by(&trusted, &["10.9.9.9, 10.1.1.1"], peer),
            "10.9.9.9"
        );
        // A malformed entry right of every untrusted one: nothing can be vouched for.
        assert_eq!(
            client_by(&trusted, &["203.0.113.7, unknown, 10.1.1.1"], peer),
            peer
        );
        assert_eq!(client_by(&trusted, &[""], peer), peer);
        // Empty list elements are no entries (RFC 9110 §5.6.1).
        assert_eq!(
            client_by(&trusted, &["203.0.113.7, ,", "10.1.1.1"], peer),
            "203.0.113.7"
        );
        assert_eq!(client_by(&trusted, &["not an ip"], peer), peer);
        // A malformed entry left of the client's does not matter.
        assert_eq!(
            client_by(&trusted, &["garbage, 203.0.113.7, 10.1.1.1"], peer),
            "203.0.113.7"
        );
    }

    #[test]
    fn appends_to_an_existing_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static(" 10.0.0.2 "));
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        let out = upstream(&h, "127.0.0.1", Some("a.example"));
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out.get_all("x-forwarded-host").iter().count(), 1);
        assert_eq!(out["x-forwarded-host"], "a.example");
        assert_eq!(out["host"], "a.example");
        // The client's map is left as it was, for a retry.
        assert_eq!(h.len(), 4);

        let out = upstream(&HeaderMap::new(), "2001:db8::7", None);
        assert_eq!(out["x-forwarded-for"], "2001:db8::7");
        assert!(!out.contains_key(header::HOST));
    }

    #[test]
    fn upstream_headers_leave_hop_by_hop_ones_out_and_keep_the_rest_in_order() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append("x-kept", HeaderValue::from_static("1"));
        h.append("x-kept", HeaderValue::from_static("2"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // HTTP/2: no Host header, the authority stands in.
        let out = upstream(&h, "127.0.0.1", Some("b.example"));
        let kept: Vec<_> = out.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["1", "2"]);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "expect",
            "content-length",
        ] {
            assert!(!out.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(out["host"], "b.example");
    }

    /// The same rules over bytes, as both engines write them: a `Connection` option naming
    /// `Host` keeps `Host`; an absolute-form authority replaces the client's `Host` in place.
    #[test]
    fn push_upstream_fields_writes_lines_in_order() {
        let fields: &[(&[u8], &[u8])] = &[
            (b"Accept", b"*/*"),
            (b"Host", b"a.example"),
            (b"Connection", b"host"),
        ];
        let mut out = Vec::new();
        let forwarding = Forwarding {
            client: b"192.0.2.7",
            host: Some(b"other.example"),
            https: false,
            keep_forwarded_for: true,
        };
        push_upstream_fields(&mut out, || fields.iter().copied(), &forwarding);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Accept: */*\r\nhost: other.example\r\nx-forwarded-host: other.example\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n"
        );
        // Over TLS, the same lines with `https`; a client's own X-Forwarded-Proto is dropped.
        let fields: &[(&[u8], &[u8])] = &[(b"X-Forwarded-Proto", b"http")];
        let mut out = Vec::new();
        let forwarding = Forwarding {
            client: b"192.0.2.7",
            host: None,
            https: true,
            keep_forwarded_for: true,
        };
        push_upstream_fields(&mut out, || fields.iter().copied(), &forwarding);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n"
        );
    }

    #[test]
    fn leaves_a_message_without_hop_by_hop_headers_alone_and_strips_upgrade_pairs() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-one", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);

        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, close"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("close", HeaderValue::from_static("named by Connection"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn every_connection_field_names_headers_to_strip() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-First , x-second"),
        );
        h.insert("x-first", HeaderValue::from_static("1"));
        h.insert("x-second", HeaderValue::from_static("2"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
