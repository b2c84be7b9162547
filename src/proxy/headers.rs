//! Header rewriting between client and backend: hop-by-hop removal and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::access_log::push_ip;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy
/// `Keep-Alive` and `Proxy-Connection`. The bit of each in [`strip_hop_by_hop`]'s mask is its
/// place here.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The place of a (lowercase) name in [`HOP_BY_HOP`]. A `match` on the text is a length check
/// and at most one compare; seven `HeaderName` equalities per header cost ~4x more (callgrind).
fn hop_by_hop_index(name: &str) -> Option<u32> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        _ => return None,
    })
}

/// Whether `name`, in any case, is one of [`HOP_BY_HOP`]: the native HTTP/1.1 path reads names
/// as the client sent them. The length decides first: most names have none of these lengths.
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

/// Removes hop-by-hop headers, including every header a `Connection` field names (all of them:
/// a message may carry several `Connection` fields).
///
/// NOTE: one pass over the handful of names a message carries finds which hop-by-hop headers are
/// present; only those are removed. Removing all seven blindly hashed seven names per message,
/// twice per request (~2.6k instructions a request under wrk, callgrind).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is Connection: remove what it names first, while it is still there, one at
    // a time (finding the next borrows the map). The usual values (`keep-alive`, `close`)
    // name nothing present, which costs a lookup and no allocation.
    if present & 1 != 0 {
        while let Some(name) = next_connection_named(headers) {
            headers.remove(name.as_str());
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// A header present in `headers` that a `Connection` field names, other than the fixed
/// hop-by-hop ones (removed anyway if present at all).
fn next_connection_named(headers: &HeaderMap) -> Option<String> {
    connection_tokens(headers)
        .find(|name| {
            !is_hop_by_hop_name(name.as_bytes())
                // A `&str` key is looked up without allocating; an invalid name finds nothing.
                && headers.contains_key(*name)
        })
        .map(str::to_owned)
}

/// The names listed in every `Connection` field, as sent (any case).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What a forwarded request says about its client, besides the client's own headers.
pub struct Forwarding<'a> {
    pub client: IpAddr,
    /// The host the client asked for (`Host`, or an HTTP/2 request's `:authority`): sent as
    /// `Host` when the client sent none, and as `X-Forwarded-Host`.
    pub host: Option<&'a HeaderValue>,
}

/// The headers a request goes to its backend with: the client's end-to-end headers (hop-by-hop
/// ones and those its `Connection` names left out), the client appended to `X-Forwarded-For`,
/// `X-Forwarded-Proto` and `-Host` set, and the upgrade pair when one is asked for.
///
/// NOTE: built fresh from the client's map, which stays untouched for a retry. Editing the
/// client's map in place (which grew it for the `X-Forwarded-*` headers) and cloning it for each
/// attempt cost four more allocations a request (callgrind under wrk).
pub fn upstream_headers(client_headers: &HeaderMap, forwarding: &Forwarding<'_>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client_headers.len() + 5);
    each_upstream_header(client_headers, forwarding, |name, value| {
        headers.append(name.clone(), value.clone());
    });
    headers
}

/// Hands `emit` each header of [`upstream_headers`], in order, without building a map: what a
/// request written as bytes needs (`h1::backend`).
pub fn each_upstream_header(
    client_headers: &HeaderMap,
    forwarding: &Forwarding<'_>,
    mut emit: impl FnMut(&HeaderName, &HeaderValue),
) {
    let connection_names_others =
        connection_tokens(client_headers).any(|name| !is_hop_by_hop_name(name.as_bytes()));
    let mut sent_host = false;
    for (name, value) in client_headers {
        let dropped = hop_by_hop_index(name.as_str()).is_some()
            // Set below.
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
            || (connection_names_others
                && connection_tokens(client_headers)
                    .any(|named| named.eq_ignore_ascii_case(name.as_str())));
        if !dropped {
            sent_host |= name == header::HOST;
            emit(name, value);
        }
    }
    if let Some(host) = forwarding.host {
        if !sent_host {
            emit(&header::HOST, host);
        }
        emit(&X_FORWARDED_HOST, host);
    }
    if let Some(value) = forwarded_for(client_headers, forwarding.client) {
        emit(&X_FORWARDED_FOR, &value);
    }
    emit(&X_FORWARDED_PROTO, &HeaderValue::from_static("http"));
}

/// The client's `X-Forwarded-For` list (all its fields, in order) with `client` appended.
fn forwarded_for(client_headers: &HeaderMap, client: IpAddr) -> Option<HeaderValue> {
    let mut list = String::with_capacity(39);
    for prior in client_headers.get_all(&X_FORWARDED_FOR) {
        let prior = prior.to_str().map(str::trim).unwrap_or("");
        if !prior.is_empty() {
            list.push_str(prior);
            list.push_str(", ");
        }
    }
    push_ip(&mut list, client);
    HeaderValue::try_from(list).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_only_them() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_str().as_bytes()));
            assert!(is_hop_by_hop_name(
                name.as_str().to_ascii_uppercase().as_bytes()
            ));
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
        let host = host.map(HeaderValue::from_str).transpose().unwrap();
        let forwarding = Forwarding {
            client: client.parse().unwrap(),
            host: host.as_ref(),
        };
        upstream_headers(h, &forwarding)
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
        let out = upstream(&HeaderMap::new(), "10.200.3.4", None);
        assert_eq!(out["x-forwarded-for"], "10.200.3.4");
    }

    #[test]
    fn upstream_headers_leave_hop_by_hop_ones_out_and_keep_the_rest_in_order() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.append("x-kept", HeaderValue::from_static("1"));
        h.append("x-kept", HeaderValue::from_static("2"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // HTTP/2: no Host header, the authority stands in.
        let out = upstream(&h, "127.0.0.1", Some("b.example"));
        let kept: Vec<_> = out.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["1", "2"]);
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!out.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(out["host"], "b.example");
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
