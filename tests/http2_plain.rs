//! Bodiless requests hyper serves, sent to the backend by lb's own HTTP/1.1 code on a plain
//! socket (`upstream::send_plain`, `h1::backend::PlainBody`): HTTP/2 clients over h2c prior
//! knowledge (and, in section 9, an HTTP/1.1 connection's requests). Every response framing a backend may use
//! (length, chunked, close-delimited, bodiless), a body cut short, a large body, the request head
//! the backend gets, and backend connection reuse. Backends are raw TCP, so the bytes lb reads are
//! exactly the ones written here.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::raw::{header, headers_named, setup, status_line, status_of, Reply, Wire, WAIT};
use support::Lb;
use tokio::net::TcpStream;
use tokio::time::timeout;

// === helpers ===

/// A body of `n` bytes that is not periodic over any short span, so a dropped or repeated
/// piece shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

// === HTTP/2 client ===

/// What an HTTP/2 client got: the head, and the body or why reading it failed.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

impl Got {
    fn body(&self) -> &Bytes {
        self.body
            .as_ref()
            .unwrap_or_else(|error| panic!("body failed: {error}"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/2 connection to lb with prior knowledge (h2c, no upgrade dance).
async fn h2(lb: &Lb) -> SendRequest<Empty<Bytes>> {
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .expect("connect within the deadline")
        .expect("connect to lb");
    let (sender, connection) = timeout(
        WAIT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("handshake within the deadline")
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// Sends `request` and reads its whole body, each within [`WAIT`].
async fn send(sender: &mut SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> Got {
    try_send(sender, request)
        .await
        .unwrap_or_else(|error| panic!("response head: {error}"))
}

/// [`send`], with the stream failing before its head as an `Err`.
async fn try_send(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<Got, String> {
    timeout(WAIT, sender.ready())
        .await
        .expect("connection ready within the deadline")
        .expect("connection open");
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .expect("response head within the deadline")
        .map_err(|error| format!("{error:?}"))?;
    assert_eq!(response.version(), Version::HTTP_2);
    let (parts, body) = response.into_parts();
    let body = timeout(WAIT, body.collect())
        .await
        .expect("the body ended (whole or failed) within the deadline")
        .map(|collected| collected.to_bytes())
        .map_err(|error| format!("{error:?}"));
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `method path` to lb, bodiless.
async fn fetch(sender: &mut SendRequest<Empty<Bytes>>, lb: &Lb, method: Method, path: &str) -> Got {
    let request = Request::builder()
        .method(method)
        .uri(lb.url(path))
        .body(Empty::new())
        .unwrap();
    send(sender, request).await
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, lb: &Lb, path: &str) -> Got {
    fetch(sender, lb, Method::GET, path).await
}

// === 1. Content-Length ===

#[tokio::test]
async fn a_length_body_arrives_with_end_to_end_headers_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|seen| {
        let body = seen.target().to_owned();
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-App: 1\r\nConnection: x-internal\r\n\
             X-Internal: secret\r\nKeep-Alive: timeout=5\r\nCache-Control: no-store\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let mut client = h2(&lb).await;
    let mut conns = Vec::new();
    for path in ["/len/1", "/len/2"] {
        let got = get(&mut client, &lb, path).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), path);
        assert_eq!(got.header("content-length"), Some("6"));
        assert_eq!(got.header("x-app"), Some("1"));
        assert_eq!(got.header("cache-control"), Some("no-store"));
        for hop in ["connection", "x-internal", "keep-alive"] {
            assert!(
                !got.headers.contains_key(hop),
                "{hop} reached the client: {:?}",
                got.headers
            );
        }
        let seen = backend.next().await;
        assert_eq!(seen.target(), path);
        conns.push(seen.conn);
    }
    assert_eq!(
        conns[0], conns[1],
        "both requests on one backend connection"
    );
}

// === 2. chunked ===

#[tokio::test]
async fn a_chunked_body_arrives_decoded_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-App: 1\r\n\r\n\
             5;name=value\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )
    })
    .await;
    let mut client = h2(&lb).await;
    let mut conns = Vec::new();
    for path in ["/chunked/1", "/chunked/2"] {
        let got = get(&mut client, &lb, path).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "hello, world");
        assert_eq!(got.header("x-app"), Some("1"));
        for coding in ["transfer-encoding", "trailer", "content-length"] {
            assert!(
                !got.headers.contains_key(coding),
                "{coding} reached the client: {:?}",
                got.headers
            );
        }
        let seen = backend.next().await;
        assert_eq!(seen.target(), path);
        conns.push(seen.conn);
    }
    assert_eq!(
        conns[0], conns[1],
        "the chunked body's end (trailer included) left the connection reusable"
    );
}

// === 3. close-delimited ===

#[tokio::test]
async fn a_close_delimited_body_arrives_whole_and_the_next_request_gets_a_new_connection() {
    let big = pattern(50_000);
    let reply_big = big.clone();
    let (mut backend, lb) = setup(move |seen| {
        if seen.target() == "/close" {
            let mut bytes = b"HTTP/1.1 200 OK\r\nX-App: 1\r\n\r\n".to_vec();
            bytes.extend_from_slice(&reply_big);
            Reply::raw(bytes).closing()
        } else {
            Reply::ok("after")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/close").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body().len(), big.len());
    assert!(got.body()[..] == big[..], "close-delimited body differs");
    assert_eq!(got.header("x-app"), Some("1"));
    assert_eq!(got.header("content-length"), None);
    let first = backend.next().await;

    let got = get(&mut client, &lb, "/after").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "after");
    let second = backend.next().await;
    assert_eq!(second.target(), "/after");
    assert_ne!(
        first.conn, second.conn,
        "a close-delimited body's connection is never reused"
    );
}

// === 4. HEAD ===

#[tokio::test]
async fn a_head_answer_keeps_its_length_without_a_body_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|seen| {
        if seen.method() == "HEAD" {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\n\r\n")
        } else {
            Reply::ok("hello")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = fetch(&mut client, &lb, Method::HEAD, "/head").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), Some("5"));
    assert_eq!(got.header("x-app"), Some("1"));
    assert!(got.body().is_empty(), "HEAD got a body: {:?}", got.body());
    let head = backend.next().await;
    assert_eq!(head.request_line(), "HEAD /head HTTP/1.1");

    let got = get(&mut client, &lb, "/get").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "hello");
    let next = backend.next().await;
    assert_eq!(next.request_line(), "GET /get HTTP/1.1");
    assert_eq!(
        head.conn, next.conn,
        "the HEAD answer's connection was reused"
    );
}

// === 5. 204 ===

#[tokio::test]
async fn a_204_loses_a_bogus_content_length() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/204" {
            Reply::raw("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nX-App: 1\r\n\r\n")
        } else {
            Reply::ok("next")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/204").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(
        got.header("content-length"),
        None,
        "204 carried a length: {:?}",
        got.headers
    );
    assert_eq!(got.header("x-app"), Some("1"));
    assert!(got.body().is_empty());
    let first = backend.next().await;

    // A 204 has no body whatever its head says, so the connection stays in step.
    let got = get(&mut client, &lb, "/next").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "next");
    let second = backend.next().await;
    assert_eq!(first.conn, second.conn, "the 204's connection was reused");
}

// === 6. a body cut short ===

#[tokio::test]
async fn a_body_cut_short_by_the_backend_fails_the_stream_and_lb_serves_on() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/short" {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            bytes.extend_from_slice(&[b'x'; 50]);
            Reply::raw(bytes).closing()
        } else {
            Reply::ok("whole")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    // `try_send` bounds the head and the body by WAIT, so a hang fails there. The stream ends
    // in a reset: after the head and the first bytes, or before the head reached the client
    // when h2 had not flushed it yet (a reset drops a stream's queued frames). Either way the
    // client never sees a clean, short body.
    let request = Request::get(lb.url("/short")).body(Empty::new()).unwrap();
    match try_send(&mut client, request).await {
        Ok(got) => {
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.header("content-length"), Some("100"));
            assert!(
                got.body.is_err(),
                "a truncated body ended cleanly with {:?} bytes",
                got.body.as_ref().map(Bytes::len)
            );
        }
        Err(error) => assert!(error.contains("Reset"), "{error}"),
    }
    let first = backend.next().await;

    // The same client connection, and lb, take the next request; the backend gets it on a new
    // connection (the cut one is closed).
    let got = get(&mut client, &lb, "/whole").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "whole");
    let second = backend.next().await;
    assert_eq!(second.target(), "/whole");
    assert_ne!(first.conn, second.conn);

    // And a new client connection too.
    let mut other = h2(&lb).await;
    assert_eq!(get(&mut other, &lb, "/whole").await.text(), "whole");
}

// === 7. a large body ===

#[tokio::test]
async fn a_two_mib_length_body_streamed_in_pieces_arrives_byte_exact() {
    const SIZE: usize = 2 * 1024 * 1024;
    let big = pattern(SIZE);
    let reply_big = big.clone();
    let (mut backend, lb) = setup(move |_| {
        let mut pieces =
            vec![format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes()];
        // Uneven pieces, so piece and read boundaries fall anywhere.
        pieces.extend(reply_big.chunks(61_441).map(<[u8]>::to_vec));
        Reply::pieces(pieces, Duration::from_millis(2))
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/big").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    assert_eq!(got.body().len(), SIZE);
    let first_diff = got.body().iter().zip(&big).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "body differs from the first differing byte on"
    );
    let first = backend.next().await;

    // The whole body was read, so the connection is reused.
    let got = get(&mut client, &lb, "/big").await;
    assert_eq!(got.body().len(), SIZE);
    assert_eq!(backend.next().await.conn, first.conn);
}

// === 8. the request side ===

#[tokio::test]
async fn the_backend_gets_an_http11_head_with_host_and_forwarding_headers() {
    let (mut backend, lb) = setup(|_| Reply::ok("ok")).await;
    let mut client = h2(&lb).await;

    let request = Request::get(lb.url("/path?q"))
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-custom", "kept")
        .body(Empty::new())
        .unwrap();
    let got = send(&mut client, request).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "ok");

    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /path?q HTTP/1.1", "{}", seen.head);
    let authority = lb.http.to_string();
    assert_eq!(
        headers_named(&seen.head, "host"),
        [authority.as_str()],
        "{}",
        seen.head
    );
    assert_eq!(
        header(&seen.head, "x-forwarded-host").as_deref(),
        Some(authority.as_str())
    );
    let forwarded_for = headers_named(&seen.head, "x-forwarded-for");
    assert_eq!(forwarded_for.len(), 1, "{}", seen.head);
    assert_eq!(forwarded_for[0], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        header(&seen.head, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(header(&seen.head, "x-custom").as_deref(), Some("kept"));
    for gone in ["te", "connection", "transfer-encoding", "content-length"] {
        assert_eq!(header(&seen.head, gone), None, "{gone} sent: {}", seen.head);
    }
    assert!(seen.body.is_empty());
}

// === 9. HTTP/1.1: one engine for every request of a connection ===

#[tokio::test]
async fn a_get_after_a_chunked_post_on_one_connection_reuses_the_backend_socket() {
    let (mut backend, lb) = setup(|seen| {
        let body = format!("{} {}", seen.method(), seen.target());
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-App: 1\r\nConnection: x-internal\r\n\
             X-Internal: secret\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let mut client = Wire::connect(&lb).await;

    // A chunked body: read, decoded and framed again by lb's own engine.
    client
        .send(b"POST /up HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    let (head, body) = client.length_response().await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, b"POST /up");
    let post = backend.next().await;
    assert_eq!(post.body, b"hello");

    // Bodiless, on the same connection and the same backend socket.
    let mut get_conns = Vec::new();
    for path in ["/after/1", "/after/2"] {
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes())
            .await;
        let (head, body) = client.length_response().await;
        assert_eq!(status_of(&head), 200, "{head}");
        assert_eq!(String::from_utf8_lossy(&body), format!("GET {path}"));
        assert_eq!(header(&head, "x-app").as_deref(), Some("1"), "{head}");
        assert_eq!(header(&head, "x-internal"), None, "{head}");
        assert_eq!(
            header(&head, "content-length"),
            Some(body.len().to_string())
        );
        let seen = backend.next().await;
        assert_eq!(seen.request_line(), format!("GET {path} HTTP/1.1"));
        assert_eq!(header(&seen.head, "host").as_deref(), Some("x.test"));
        assert_eq!(
            header(&seen.head, "x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(seen.conn, post.conn, "the POST's backend socket was reused");
        get_conns.push(seen.conn);
    }
    assert_eq!(
        get_conns[0], get_conns[1],
        "the plain socket was reused for the second GET"
    );
}

/// An HTTP/2 client that resets its stream mid-body: lb must close that backend socket, not
/// pool it (the next request goes on a new backend connection).
#[tokio::test]
async fn h2_reset_mid_body_does_not_pool_the_socket() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/slow" {
            Reply::pieces(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_vec(),
                    vec![b'a'; 10_000],
                    vec![b'b'; 10_000],
                ],
                Duration::from_millis(500),
            )
        } else {
            Reply::ok("fine")
        }
    })
    .await;
    let stream = TcpStream::connect(lb.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let request = Request::get(lb.url("/slow"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = timeout(WAIT, body.frame()).await.unwrap().unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body); // RST_STREAM(CANCEL)
    let slow = backend.next().await;
    // lb closes the cut socket.
    let closed = backend.next_closed().await;
    assert_eq!(closed, slow.conn);

    let request = Request::get(lb.url("/after"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"fine");
    assert_ne!(backend.next().await.conn, slow.conn);
}

/// A length body followed by stray bytes: the socket must not be pooled.
#[tokio::test]
async fn stray_bytes_after_a_body_are_not_pooled() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/stray" {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK")
        } else {
            Reply::ok("fine")
        }
    })
    .await;
    let stream = TcpStream::connect(lb.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/stray", "/next"] {
        let request = Request::get(lb.url(path))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
    let a = backend.next().await;
    let b = backend.next().await;
    assert_ne!(
        a.conn, b.conn,
        "a socket with stray bytes went back to the pool"
    );
}

/// HTTP/1.0 without Host (hyper serves it): the backend gets `Host: <backend authority>`.
#[tokio::test]
async fn http10_without_host_names_the_backend() {
    let (mut backend, lb) = setup(|_| Reply::ok("ten")).await;
    let mut client = Wire::connect(&lb).await;
    client.send(b"GET /ten HTTP/1.0\r\n\r\n").await;
    let body = client.until_close().await;
    assert!(String::from_utf8_lossy(&body).ends_with("ten"));
    let seen = backend.next().await;
    assert_eq!(
        header(&seen.head, "host").as_deref(),
        Some(backend.addr.to_string().as_str()),
        "{}",
        seen.head
    );
}

/// A custom reason phrase reaches an HTTP/1.1 client whichever way its request went: lb's own
/// path, hyper's client, or hyper serving with the plain-socket backend path.
#[tokio::test]
async fn reason_phrase_on_a_hyper_served_http11_connection() {
    let (_backend, lb) = setup(|seen| {
        let body = format!("{} {}", seen.method(), seen.target());
        Reply::raw(format!(
            "HTTP/1.1 200 Fine Thanks\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    // Native path first.
    client
        .send(b"GET /native HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    let (head, _) = client.length_response().await;
    let native = status_line(&head).to_owned();
    // Hand the connection to hyper (chunked body), then a bodiless GET.
    client
        .send(b"POST /up HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    let (head, _) = client.length_response().await;
    let hyper_client = status_line(&head).to_owned();
    client
        .send(b"GET /after HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    let (head, _) = client.length_response().await;
    let plain = status_line(&head).to_owned();
    assert_eq!(native, "HTTP/1.1 200 Fine Thanks");
    assert_eq!(hyper_client, "HTTP/1.1 200 Fine Thanks");
    assert_eq!(
        plain, "HTTP/1.1 200 Fine Thanks",
        "the plain path lost the reason phrase"
    );
}
