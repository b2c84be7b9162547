//! The idle set's expiry on tokio's paused clock: `since` is a `tokio::time::Instant`, so an
//! hour of idleness is a call to `advance`, and the timeout is exact to the millisecond.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A listener that keeps its accept queue (so connections to it stay quiet) and one connection
/// to it.
async fn quiet_socket() -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (listener, stream)
}

#[tokio::test(start_paused = true)]
async fn close_expired_keeps_a_socket_until_its_idle_timeout_and_closes_it_after() {
    let (_listener, stream) = quiet_socket().await;
    let connections = IdleConnections::default();
    assert_eq!(
        connections.idle_timeout(),
        crate::config::DEFAULT_IDLE_TIMEOUT
    );
    connections.put_stream(Upstream::plain(stream));

    tokio::time::advance(Duration::from_secs(89)).await;
    connections.close_expired();
    assert_eq!(connections.len(), 1, "idle for 89 s of 90");

    tokio::time::advance(Duration::from_secs(2)).await;
    connections.close_expired();
    assert!(connections.is_empty(), "idle for 91 s of 90");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_idle_timeout_applies_to_the_sockets_already_held() {
    let (_listener, stream) = quiet_socket().await;
    let connections = IdleConnections::default();
    connections.put_stream(Upstream::plain(stream));
    tokio::time::advance(Duration::from_secs(5)).await;

    connections.set_idle_timeout(Duration::from_secs(10));
    connections.close_expired();
    assert_eq!(connections.len(), 1, "idle for 5 s of 10");

    connections.set_idle_timeout(Duration::from_secs(4));
    connections.close_expired();
    assert!(connections.is_empty(), "idle for 5 s of 4");
}

#[tokio::test(start_paused = true)]
async fn take_stream_never_hands_out_a_socket_idle_past_the_timeout() {
    let (_listener, stream) = quiet_socket().await;
    let connections = IdleConnections::default();
    connections.set_idle_timeout(Duration::from_secs(1));
    connections.put_stream(Upstream::plain(stream));
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(connections.take_stream().is_none());
    assert!(
        connections.is_empty(),
        "the expired socket is closed, not put back"
    );

    let (_listener, stream) = quiet_socket().await;
    connections.put_stream(Upstream::plain(stream));
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(
        connections.take_stream().is_some(),
        "idle for 999 ms of 1 s"
    );
}

#[tokio::test]
async fn a_socket_the_peer_closed_is_neither_kept_nor_handed_out() {
    let (listener, stream) = quiet_socket().await;
    let connections = IdleConnections::default();
    // The peer end: accepted and dropped, which closes the connection.
    drop(listener.accept().await.unwrap());
    connections.put_stream(Upstream::plain(stream));
    // The close reaches the socket's readiness asynchronously; wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !connections.is_empty() && std::time::Instant::now() < deadline {
        connections.close_expired();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(connections.is_empty());
    assert!(connections.take_stream().is_none());
}
