//! Header rewriting between client and backend: hop-by-hop removal and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::access_log::push_ip;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy
/// `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
///
/// NOTE: one pass over the handful of names a message carries finds which hop-by-hop headers are
/// present; only those are removed. Removing all seven blindly hashed seven names per message,
/// twice per request (~2.6k instructions a request under wrk, callgrind).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is Connection: remove what it names first, while it is still there.
    if present & 1 != 0 {
        let named = headers.get(header::CONNECTION).cloned();
        for name in named
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
        {
            let name = name.trim();
            // Names in HOP_BY_HOP (`keep-alive`, `upgrade`) go below if present at all.
            if !name.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name))
            {
                // A `&str` key is looked up without allocating; an invalid name finds nothing.
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and `-Host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|prior| !prior.is_empty());
    let value = match prior {
        Some(prior) => {
            let mut list = String::with_capacity(prior.len() + 2 + 39);
            list.push_str(prior);
            list.push_str(", ");
            push_ip(&mut list, client);
            HeaderValue::try_from(list)
        }
        None => {
            let mut ip = String::with_capacity(39);
            push_ip(&mut ip, client);
            HeaderValue::try_from(ip)
        }
    };
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn appends_to_an_existing_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            Some(&HeaderValue::from_static("a.example")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");

        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "2001:db8::7".parse().unwrap(), None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "10.200.3.4".parse().unwrap(), None);
        assert_eq!(h["x-forwarded-for"], "10.200.3.4");
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
}
