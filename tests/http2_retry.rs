//! HTTP/2 requests with bodies go through hyper's client; a refused connect hands the unsent
//! request back (no shared body slot), so the retry on another backend sends the same body whole.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::raw::{start, WAIT};
use support::Backend;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn an_http2_body_is_retried_whole_after_a_refused_connect() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = start(&[a.addr.to_string(), b.addr.to_string()]).await;
    let a_addr = a.kill().await;

    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .unwrap()
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);

    let ejected = format!("connect failed; backend out of rotation pool=/ backend={a_addr}");
    let mut sent = 0;
    while lb.find_log(&ejected).is_none() {
        assert!(sent < 60, "a was never picked and ejected");
        let request = http::Request::post("http://x.test/r")
            .body(Full::new(Bytes::from(vec![1u8; 100_000])))
            .unwrap();
        let response = timeout(WAIT, sender.send_request(request))
            .await
            .expect("an answer within the deadline")
            .expect("an answer");
        assert_eq!(response.status(), 200);
        let body = timeout(WAIT, response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"b");
        sent += 1;
    }
    // Every request reached b exactly once, body whole, including the retried one.
    assert_eq!(b.hits(), sent);
    assert!(b.seen().iter().all(|s| s.body_len == 100_000));
}
