//! What lb's own HTTP/2 engine (`proxy::h2`, on the `h2` crate's server) does that hyper's
//! server used to: no body for HEAD, a reset of only the failing stream, request bodies (with
//! trailers) read off the client's stream, many streams at once in one connection's task, and
//! GOAWAY on drain with the streams in flight finished. The client is the `h2` crate itself, so
//! resets, END_STREAM and GOAWAY are seen as frames, not as a client library's reading of them.

mod support;

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode};
use support::raw::{setup, RawBackend, Reply, Wire, WAIT};
use support::Lb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// An h2c (prior knowledge) connection to lb, its connection future spawned.
async fn connect(lb: &Lb) -> SendRequest<Bytes> {
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .expect("connect within the deadline")
        .expect("connect to lb");
    let (sender, connection) = timeout(WAIT, h2::client::handshake(stream))
        .await
        .expect("handshake within the deadline")
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

fn request(lb: &Lb, method: Method, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(lb.url(path))
        .body(())
        .unwrap()
}

/// Reads a body to its end: the bytes, or the stream's error.
async fn read_body(mut body: h2::RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = timeout(WAIT, body.data()).await.expect("body in time") {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[tokio::test]
async fn a_head_has_no_body_but_its_length_and_a_date() {
    let (_backend, lb) = setup(|seen| {
        if seen.method() == "HEAD" {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        } else {
            Reply::ok("hello")
        }
    })
    .await;
    let mut client = connect(&lb).await;
    let (response, _) = client
        .send_request(request(&lb, Method::HEAD, "/h"), true)
        .expect("send");
    let response = timeout(WAIT, response).await.unwrap().expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "5");
    assert!(response.headers().contains_key("date"), "{response:?}");
    // END_STREAM on the HEADERS frame: not even an empty DATA frame follows.
    assert!(response.body().is_end_stream(), "a HEAD got a body");

    // The GET of the same has the body, framed by the same length.
    let (response, _) = client
        .send_request(request(&lb, Method::GET, "/h"), true)
        .expect("send");
    let response = timeout(WAIT, response).await.unwrap().expect("head");
    assert_eq!(response.headers()["content-length"], "5");
    assert_eq!(read_body(response.into_body()).await.unwrap(), b"hello");
}

#[tokio::test]
async fn a_backend_body_error_resets_only_its_stream() {
    let mut backend = RawBackend::handing_over(|seen, mut wire: Wire| async move {
        if seen.target() == "/cut" {
            // Half the announced body, then a close: lb's read of the body fails.
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            bytes.extend_from_slice(&[b'x'; 50]);
            let _ = wire.stream.write_all(&bytes).await;
        } else {
            // Answered late, so the cut stream fails while this one is in flight.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = wire
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                .await;
        }
    })
    .await;
    let lb = support::raw::start(&[backend.addr.to_string()]).await;
    let mut client = connect(&lb).await;
    let (slow, _) = client
        .send_request(request(&lb, Method::GET, "/slow"), true)
        .expect("send");
    let _ = backend.next().await;
    let (cut, _) = client
        .send_request(request(&lb, Method::GET, "/cut"), true)
        .expect("send");
    // Reset after its head, or before the head left lb (a reset drops queued frames).
    let outcome = match timeout(WAIT, cut).await.unwrap() {
        Ok(response) => read_body(response.into_body()).await.map(|_| ()),
        Err(error) => Err(error),
    };
    let error = outcome.expect_err("a cut body must not end cleanly");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::INTERNAL_ERROR),
        "{error:?}"
    );

    // The other stream of the connection is answered whole, and the connection serves on.
    let slow = timeout(WAIT, slow)
        .await
        .unwrap()
        .expect("the other stream");
    assert_eq!(read_body(slow.into_body()).await.unwrap(), b"slow");
    let (again, _) = client
        .send_request(request(&lb, Method::GET, "/again"), true)
        .expect("the connection is open");
    let again = timeout(WAIT, again).await.unwrap().expect("head");
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_body_with_trailers_reaches_the_backend() {
    let mut backend = RawBackend::handing_over(|seen, mut wire: Wire| async move {
        let chunked = seen
            .head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let (body, trailers) = if chunked {
            wire.chunked().await
        } else {
            (Vec::new(), Vec::new())
        };
        let text = format!(
            "{} bytes, chunked {chunked}, trailers {trailers:?}",
            body.len()
        );
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        let _ = wire.stream.write_all(reply.as_bytes()).await;
    })
    .await;
    let lb = support::raw::start(&[backend.addr.to_string()]).await;
    let mut client = connect(&lb).await;
    let mut post = request(&lb, Method::POST, "/upload");
    post.headers_mut()
        .insert("trailer", "x-checksum".parse().unwrap());
    let (response, mut body) = client.send_request(post, false).expect("send");
    // Two DATA frames (no content-length: the backend gets it chunked), then trailers.
    body.send_data(Bytes::from(vec![b'a'; 70_000]), false)
        .unwrap();
    body.send_data(Bytes::from_static(b"tail"), false).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "1234".parse().unwrap());
    body.send_trailers(trailers).unwrap();
    let response = timeout(WAIT, response).await.unwrap().expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(read_body(response.into_body()).await.unwrap()).unwrap();
    assert!(
        text.starts_with("70004 bytes, chunked true"),
        "the backend got {text:?}"
    );
    // The trailer section goes on in the chunked body's last chunk.
    assert!(
        text.to_ascii_lowercase().contains("x-checksum: 1234"),
        "the backend got the trailers: {text:?}"
    );
    let seen = backend.next().await;
    assert!(seen.head.starts_with("POST /upload "), "{}", seen.head);
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection_are_all_answered() {
    const STREAMS: usize = 150;
    let (_backend, lb) = setup(|seen| Reply::ok(seen.target())).await;
    let client = connect(&lb).await;
    let mut client = timeout(WAIT, client.ready()).await.unwrap().unwrap();
    let mut pending = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let path = format!("/stream/{i}");
        // lb allows 200 at once: all of these are open together.
        let (response, _) = client
            .send_request(request(&lb, Method::GET, &path), true)
            .expect("send");
        pending.push((path, response));
        client = timeout(WAIT, client.ready()).await.unwrap().unwrap();
    }
    for (path, response) in pending {
        let response = timeout(WAIT, response).await.unwrap().expect("head");
        assert_eq!(response.status(), StatusCode::OK);
        let body = read_body(response.into_body()).await.unwrap();
        assert_eq!(body, path.as_bytes());
    }
}

#[tokio::test]
async fn a_drain_sends_goaway_and_the_streams_in_flight_finish() {
    let mut backend = RawBackend::handing_over(|_seen, mut wire: Wire| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let _ = wire
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfinished")
            .await;
    })
    .await;
    let mut lb = Lb::start(&format!(
        "[server]\ndrain_timeout = \"10s\"\n\n[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        WAIT,
    )
    .await;
    let stream = TcpStream::connect(lb.http).await.unwrap();
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    let connection = tokio::spawn(connection);
    let (in_flight, _) = client
        .send_request(request(&lb, Method::GET, "/slow"), true)
        .expect("send");
    let _ = backend.next().await;
    lb.send_term();
    // The stream in flight is answered whole after the GOAWAY.
    let response = timeout(WAIT, in_flight).await.unwrap().expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(read_body(response.into_body()).await.unwrap(), b"finished");
    // Then lb closes the connection cleanly (GOAWAY NO_ERROR, no stream left), and exits.
    let ended = timeout(WAIT, connection)
        .await
        .expect("the connection ended")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        lb.exit_within(WAIT).await.is_some_and(|s| s.success()),
        "lb exits 0 once drained"
    );
}
