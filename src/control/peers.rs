//! control::peers: fetches the canary windows of a fleet's other instances for the rollout
//! driver — `GET /rollout/windows` on each admin listener of `[sync] peers`, in parallel, each
//! within [`TIMEOUT`] — and adds them to this instance's own into `rollout::Windows`. It
//! sorts each peer into summed, down (nothing listening) or unreachable; what that means for
//! a step is `rollout::view`'s. Control path only: the request path never waits on a peer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::net::TcpStream;

use crate::admin::WindowsDoc;
use crate::canary::stats::Summary;
use crate::rollout::{Peers, Unheard, Windows};

/// How long one peer has to answer, connect included.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read from a peer: a windows document is a few hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// What one peer gave.
enum Heard {
    /// Its windows.
    Windows(Box<WindowsDoc>),
    /// Nothing listens there.
    Down(String),
    /// It did not answer as it should.
    Unreachable(String),
}

/// This instance's windows (`stable`, `canary`) plus those of every peer of `peers` over the
/// last `seconds` of pool `pattern`, skipping the peer that answers as `me` (this instance
/// itself, when the list names it).
pub async fn fleet_windows(
    peers: &[String],
    me: &str,
    pattern: &str,
    seconds: u64,
    (stable, canary): (Summary, Summary),
) -> Windows {
    let path = format!(
        "/rollout/windows?pool={}&seconds={seconds}",
        percent_encode(pattern)
    );
    let mut asks = tokio::task::JoinSet::new();
    for (i, peer) in peers.iter().enumerate() {
        let (peer, path) = (peer.clone(), path.clone());
        asks.spawn(async move {
            let heard = match tokio::time::timeout(TIMEOUT, fetch(&peer, &path)).await {
                Ok(heard) => heard,
                Err(_) => Heard::Unreachable(format!("no answer within {TIMEOUT:?}")),
            };
            (i, peer, heard)
        });
    }
    let mut answers = Vec::with_capacity(peers.len());
    while let Some(joined) = asks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    // In the order of the list, whichever answered first.
    answers.sort_by_key(|(i, _, _)| *i);
    let mut windows = Windows {
        stable,
        canary,
        peers: Peers::default(),
    };
    for (_, peer, heard) in answers {
        match heard {
            Heard::Windows(doc) if doc.instance == me => {}
            Heard::Windows(doc) if doc.pool != pattern || doc.seconds != seconds => {
                windows.peers.unreachable.push(Unheard {
                    peer,
                    error: format!("it answered for pool {:?} over {}s", doc.pool, doc.seconds),
                });
            }
            Heard::Windows(doc) => {
                windows.stable += &doc.stable;
                windows.canary += &doc.canary;
                windows.peers.summed.push(doc.instance);
            }
            Heard::Down(error) => windows.peers.down.push(Unheard { peer, error }),
            Heard::Unreachable(error) => windows.peers.unreachable.push(Unheard { peer, error }),
        }
    }
    windows
}

/// One `GET` of `path` on `peer`, a plain HTTP/1.1 exchange on a new connection.
async fn fetch(peer: &str, path: &str) -> Heard {
    let stream = match TcpStream::connect(peer).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Heard::Down(format!("connection refused: {error}"))
        }
        Err(error) => return Heard::Unreachable(format!("cannot connect: {error}")),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(handshake) => handshake,
        Err(error) => return Heard::Unreachable(format!("HTTP/1.1 handshake: {error}")),
    };
    let connection = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, peer)
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(request) => request,
        Err(error) => return Heard::Unreachable(format!("bad request: {error}")),
    };
    let heard = match sender.send_request(request).await {
        Err(error) => Heard::Unreachable(format!("no answer: {error}")),
        Ok(response) => {
            let status = response.status();
            match Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
            {
                Err(error) => Heard::Unreachable(format!("reading the answer: {error}")),
                Ok(body) if !status.is_success() => {
                    let body = body.to_bytes();
                    Heard::Unreachable(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    ))
                }
                Ok(body) => match serde_json::from_slice::<WindowsDoc>(&body.to_bytes()) {
                    Ok(doc) => Heard::Windows(Box::new(doc)),
                    Err(error) => Heard::Unreachable(format!("not a windows answer: {error}")),
                },
            }
        }
    };
    connection.abort();
    heard
}

/// `text` with every byte but unreserved ones (RFC 3986 §2.3) as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_percent_encoded_whole() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(
            percent_encode("GET example.com/api/{id}"),
            "GET%20example.com%2Fapi%2F%7Bid%7D"
        );
    }

    #[tokio::test]
    async fn a_refused_peer_is_down_a_silent_one_unreachable_and_neither_is_summed() {
        // A port nothing listens on: bound, then released.
        let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused_addr = refused.local_addr().expect("addr").to_string();
        drop(refused);
        // A listener that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr").to_string();
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let own = Summary {
            requests: 3,
            ..Summary::default()
        };
        let started = std::time::Instant::now();
        let windows = fleet_windows(
            &[refused_addr.clone(), silent_addr.clone()],
            "me",
            "/",
            10,
            (own, own),
        )
        .await;
        assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());
        assert_eq!(windows.stable.requests, 3, "only this instance's own");
        assert!(windows.peers.summed.is_empty());
        assert_eq!(windows.peers.down.len(), 1, "{:?}", windows.peers);
        assert_eq!(windows.peers.down[0].peer, refused_addr);
        assert_eq!(windows.peers.unreachable.len(), 1, "{:?}", windows.peers);
        assert_eq!(windows.peers.unreachable[0].peer, silent_addr);
        assert!(
            windows.peers.unreachable[0]
                .error
                .contains("no answer within"),
            "{:?}",
            windows.peers
        );
        keep.abort();
    }
}
