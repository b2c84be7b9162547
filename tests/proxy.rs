//! The reverse proxy itself: forwarding headers, streaming both ways, upgrades, HTTP/2 from
//! clients, timeouts, retries and passive health, hostile input and limits, and the error
//! answers. Hostile cases use raw TCP so nothing polite sits between the test and lb.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::raw::{find, header, read_head, status_of, RawBackend, Wire};
use support::{eventually, get, Backend, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

// === helpers ===

/// One pool `/` over `backends` with an hour-long check interval (only the first check runs),
/// plus extra `[server]` and pool keys.
fn config(backends: &[SocketAddr], server: &str, pool: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[server]\n{server}\n\n[pools.\"/\"]\ninterval = \"1h\"\nbackends = [{}]\n{pool}\n",
        list.join(", ")
    )
}

/// Starts lb and waits until every backend passed its first check.
async fn start(backends: &[SocketAddr], server: &str, pool: &str) -> Lb {
    let lb = Lb::start(&config(backends, server, pool));
    for backend in backends {
        support::healthy_eventually(&lb, "/", *backend, WAIT).await;
    }
    lb
}

/// Everything until the peer closes (a reset counts as a close); panics past the deadline.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = timeout(within, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "connection still open after {within:?}; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            })
            .unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// === 1. forwarding headers ===

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_dropped_both_ways() {
    let mut backend = RawBackend::handing_over(|_, mut wire| async move {
        let _ = wire
            .stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                  Connection: keep-alive, X-Backend-Private\r\nX-Backend-Private: 1\r\n\
                  Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: foo\r\n\
                  Trailer: X-Sum\r\nX-Kept: yes\r\n\r\nhi",
            )
            .await;
    })
    .await;
    let lb = start(&[backend.addr], "", "").await;

    let mut client = Wire::new(TcpStream::connect(lb.http).await.unwrap(), Some(WAIT));
    client
        .send(
            b"GET /h?q=1 HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.0.0.1\r\n\
              Connection: keep-alive, X-Client-Private\r\nX-Client-Private: secret\r\n\
              Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
              Upgrade: foo\r\nTrailer: X-Sum\r\nX-Kept-Request: yes\r\n\r\n",
        )
        .await;
    let (response, body) = client.length_response().await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(body, b"hi");
    assert_eq!(header(&response, "x-kept").as_deref(), Some("yes"));
    for name in [
        "x-backend-private",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert_eq!(header(&response, name), None, "{name} leaked to the client");
    }
    if let Some(connection) = header(&response, "connection") {
        assert!(!connection.to_ascii_lowercase().contains("private"));
    }

    let seen = backend.next().await.head;
    assert!(seen.starts_with("GET /h?q=1 HTTP/1.1\r\n"), "{seen}");
    assert_eq!(header(&seen, "host").as_deref(), Some("app.example"));
    assert_eq!(
        header(&seen, "x-forwarded-for").as_deref(),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(header(&seen, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        header(&seen, "x-forwarded-host").as_deref(),
        Some("app.example")
    );
    assert_eq!(header(&seen, "x-kept-request").as_deref(), Some("yes"));
    for name in [
        "x-client-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "trailer",
        "transfer-encoding",
    ] {
        assert_eq!(header(&seen, name), None, "{name} leaked to the backend");
    }
    if let Some(connection) = header(&seen, "connection") {
        assert!(!connection.to_ascii_lowercase().contains("private"));
    }
}

// === 2. streaming ===

#[tokio::test]
async fn a_64_mib_upload_streams_through_in_bounded_memory() {
    const SIZE: usize = 64 << 20;
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;

    let mut client = TcpStream::connect(lb.http).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let upload = async move {
        for _ in 0..SIZE / chunk.len() {
            client.write_all(&chunk).await.unwrap();
        }
        let mut client = Wire::new(client, Some(WAIT));
        client.length_response().await
    };
    let (response, body) = timeout(Duration::from_secs(30), upload)
        .await
        .expect("upload finished");
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(body, b"a");
    assert_eq!(backend.seen()[0].body_len, SIZE);
    let peak_mib = lb.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 48,
        "lb peaked at {peak_mib} MiB for a 64 MiB upload"
    );
}

#[tokio::test]
async fn a_slow_chunked_response_streams_its_first_chunk_early() {
    let (release_tx, release_rx) = mpsc::unbounded_channel::<()>();
    let release = std::sync::Arc::new(tokio::sync::Mutex::new(release_rx));
    let backend = RawBackend::handing_over(move |_, mut wire| {
        let release = std::sync::Arc::clone(&release);
        async move {
            let _ = wire
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await;
            // The rest only once the test saw the first chunk arrive at the client.
            let _ = release.lock().await.recv().await;
            let _ = wire.stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await;
        }
    })
    .await;
    let lb = start(&[backend.addr], "", "").await;

    let mut client = TcpStream::connect(lb.http).await.unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&got, b"first").is_none() {
        let n = timeout(WAIT, client.read(&mut chunk))
            .await
            .expect("first chunk reached the client while the backend was still sending")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    release_tx.send(()).unwrap();
    let rest = read_to_close(&mut client, WAIT).await;
    got.extend_from_slice(rest.as_bytes());
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("second") && text.ends_with("0\r\n\r\n"),
        "{text}"
    );
}

// === 3. upgrades ===

#[tokio::test]
async fn upgrades_get_the_101_and_a_byte_tunnel_until_a_side_closes() {
    let mut backend = RawBackend::handing_over(|_, mut wire| async move {
        let switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        if wire.stream.write_all(switching).await.is_ok() {
            wire.echo().await;
        }
    })
    .await;
    let lb = start(&[backend.addr], "", "").await;

    for (protocol, connection) in [("websocket", "Upgrade"), ("foo/1", "keep-alive, upgrade")] {
        let mut client = TcpStream::connect(lb.http).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nUpgrade: {protocol}\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        client.write_all(request.as_bytes()).await.unwrap();
        // Read a byte at a time: anything lb sent after the head shows in the echo below.
        let response = read_head(&mut client).await;
        assert_eq!(status_of(&response), 101, "{response}");
        assert!(header(&response, "upgrade").is_some(), "{response}");

        let seen = backend.next().await.head;
        assert_eq!(header(&seen, "upgrade").as_deref(), Some(protocol));
        assert!(header(&seen, "connection")
            .unwrap_or_default()
            .eq_ignore_ascii_case("upgrade"));
        assert_eq!(
            header(&seen, "sec-websocket-key").as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );

        // Bytes both ways, more than one buffer's worth.
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = client.split();
        let send = async {
            write.write_all(&payload).await.unwrap();
            // Closing our side ends the backend's echo, which ends the tunnel.
            write.shutdown().await.unwrap();
        };
        let receive = async {
            let mut back = Vec::new();
            timeout(WAIT, read.read_to_end(&mut back))
                .await
                .expect("tunnel closed after the client did")
                .unwrap();
            back
        };
        let ((), back) = tokio::join!(send, receive);
        assert_eq!(back.len(), payload.len());
        assert!(back == payload, "{protocol}: echoed bytes differ");
    }
}

// === 4. HTTP/2 from clients ===

#[tokio::test]
async fn h2c_clients_reach_http1_backends_with_a_host() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    let response = timeout(WAIT, client.get(lb.url("/h2?x=1").parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "a"
    );

    let upload = Request::post(lb.url("/up"))
        .body(Full::new(Bytes::from(vec![7u8; 300_000])))
        .unwrap();
    let response = timeout(WAIT, client.request(upload))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let seen = backend.seen();
    assert_eq!(seen[0].path_and_query, "/h2?x=1");
    let authority = lb.http.to_string();
    assert_eq!(seen[0].headers.get("host"), Some(&authority));
    assert_eq!(seen[0].headers.get("x-forwarded-host"), Some(&authority));
    assert_eq!(
        seen[0].headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(seen[1].body_len, 300_000);
    assert_eq!(seen[1].headers.get("host"), Some(&authority));
}

#[tokio::test]
async fn an_http10_request_without_host_reaches_the_backend_with_one() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;
    let mut stream = TcpStream::connect(lb.http).await.unwrap();
    stream
        .write_all(b"GET /old?q=1 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, WAIT).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with('a'), "{answer}");
    let seen = backend.seen();
    assert_eq!(seen[0].path_and_query, "/old?q=1");
    // HTTP/1.1 requires Host; with none from the client, the backend is named.
    assert_eq!(seen[0].headers.get("host"), Some(&backend.addr.to_string()));
}

// === 5. timeouts ===

#[tokio::test]
async fn connect_timeout_bounds_a_backend_that_never_accepts() {
    // A listener with a one-slot backlog that stops accepting after the first health check:
    // once its queue is full, the kernel drops further SYNs and connects hang.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = support::on_backends(|| socket.listen(1)).unwrap();
    let backend = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopped = std::sync::Arc::clone(&stop);
    let serving = support::spawn_backend(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (mut stream, _) = accepted.unwrap();
                    read_head(&mut stream).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                }
                () = stopped.notified() => return listener,
            }
        }
    });
    let lb = start(
        &[backend],
        "",
        "connect_timeout = \"300ms\"\nrequest_timeout = \"20s\"\nretries = 0",
    )
    .await;
    stop.notify_one();
    let _listener = serving.await.unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match timeout(Duration::from_millis(300), TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(error)) => panic!("filling the backlog: {error}"),
            Err(_) => break,
        }
    }

    let started = Instant::now();
    let (status, body) = get(&support::client(), &lb.url("/")).await;
    let took = started.elapsed();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "backend connect timed out\n")
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn request_timeout_answers_504_with_a_short_body() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "request_timeout = \"300ms\"").await;
    let started = Instant::now();
    let (status, body) = get(&support::client(), &lb.url("/slow/5000")).await;
    let took = started.elapsed();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A response head inside the limit is not cut.
    let (status, _) = get(&support::client(), &lb.url("/slow/50")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Each request of a kept-alive connection gets `request_timeout` from its own start, on both
/// engines: an earlier request answered in time neither shortens nor stretches the next one's
/// limit, and a connection whose request timed out serves on with a fresh one.
#[tokio::test]
async fn request_timeout_holds_for_each_request_of_a_kept_connection() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "request_timeout = \"500ms\"").await;

    // HTTP/1.1: one connection for every request.
    let mut client = Wire::connect(&lb).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Two answers of 300 ms each: 600 ms in all, past one limit, within each request's own.
    for _ in 0..2 {
        let response = client.exchange(&get("/slow/300")).await;
        assert_eq!(response.status, 200, "{}", response.head);
    }
    let started = Instant::now();
    let response = client.exchange(&get("/slow/5000")).await;
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.head);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    let response = client.exchange(&get("/slow/300")).await;
    assert_eq!(response.status, 200, "{}", response.head);

    // h2c: sequential streams on one connection, the same way.
    let h2: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let status = |path: &'static str| {
        let request = h2.get(lb.url(path).parse().unwrap());
        async move {
            let response = timeout(WAIT, request).await.unwrap().unwrap();
            assert_eq!(response.version(), Version::HTTP_2);
            response.status()
        }
    };
    for _ in 0..2 {
        assert_eq!(status("/slow/300").await, StatusCode::OK);
    }
    let started = Instant::now();
    assert_eq!(status("/slow/5000").await, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    assert_eq!(status("/slow/300").await, StatusCode::OK);
}

#[tokio::test]
async fn a_dribbled_or_silent_request_head_is_cut_off_at_header_timeout() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "header_timeout = \"500ms\"", "").await;

    // Dribbling: one header line every 100 ms, never the blank line.
    let started = Instant::now();
    let (mut read, mut write) = TcpStream::connect(lb.http).await.unwrap().into_split();
    write
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(5), read.read_to_end(&mut rest))
        .await
        .expect("lb closed the dribbling connection");
    dribble.abort();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "));

    // Silent: connects and never sends a byte.
    let started = Instant::now();
    let mut silent = TcpStream::connect(lb.http).await.unwrap();
    read_to_close(&mut silent, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(backend.started(), 0);
}

#[tokio::test]
async fn idle_client_connections_are_closed_but_busy_ones_are_not() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "idle_timeout = \"500ms\"", "").await;

    // HTTP/1.1 keep-alive: one request, then silence.
    let started = Instant::now();
    let mut client = TcpStream::connect(lb.http).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_head(&mut client).await;
    assert_eq!(status_of(&response), 200);
    read_to_close(&mut client, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    // HTTP/2: the connection ends (GOAWAY) once idle.
    let stream = TcpStream::connect(lb.http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(lb.url("/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    let started = Instant::now();
    timeout(Duration::from_secs(5), connection)
        .await
        .expect("idle HTTP/2 connection closed by lb")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // A request that waits on its backend longer than the idle timeout is not idle.
    let (status, body) = get(&support::client(), &lb.url("/slow/1500")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
}

// === 6. retries and passive health ===

#[tokio::test]
async fn a_refused_connect_is_retried_with_its_body_and_the_backend_ejected_until_checked() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = start(&[a.addr, b.addr], "", "").await;
    let client = support::client();
    let a_addr = a.kill().await;

    let ejected = format!("connect failed; backend out of rotation pool=/ backend={a_addr}");
    let mut sent = 0;
    while lb.find_log(&ejected).is_none() {
        assert!(sent < 60, "a was never picked and ejected");
        let request = Request::post(lb.url("/r"))
            .body(Full::new(Bytes::from(vec![1u8; 100_000])))
            .unwrap();
        let (status, body) = support::send(&client, request).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
        sent += 1;
    }
    // Every request reached b exactly once, body whole, including the retried one.
    assert_eq!(b.hits(), sent);
    assert!(b.seen().iter().all(|s| s.body_len == 100_000));

    // Out of rotation at once: no further request tries a, so none needs a retry.
    let retried = lb.logs().len();
    for _ in 0..20 {
        assert_eq!(get(&client, &lb.url("/")).await.1, "b");
    }
    assert!(lb.logs()[retried..]
        .iter()
        .all(|l| !l.contains("connect failed")));

    // The active check brings it back (a reload with a short interval restarts the checks).
    let a = Backend::start_on(a_addr, "a").await;
    std::fs::write(&lb.config, support::pool("/", &[a_addr, b.addr], "200ms")).unwrap();
    eventually(WAIT, "a back in rotation", || async {
        get(&client, &lb.url("/")).await;
        a.hits() > 0
    })
    .await;
}

#[tokio::test]
async fn a_request_that_reached_a_backend_is_never_retried() {
    // Reads the head, then hangs up mid-request without answering.
    let mut backend = RawBackend::handing_over(|_, wire| async move { drop(wire) }).await;
    let lb = start(&[backend.addr], "", "retries = 3").await;
    let request = Request::post(lb.url("/once"))
        .body(Full::new(Bytes::from(vec![1u8; 10_000])))
        .unwrap();
    let (status, body) = support::send(&support::client(), request).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "backend failed\n")
    );
    backend.next().await;
    assert!(backend.taken_all().is_empty(), "the request was sent twice");
}

#[tokio::test]
async fn an_idempotent_request_cut_off_by_its_backend_is_retried_on_another() {
    // Reads the head, then hangs up without answering, like a backend killed mid-request.
    let mut dying = RawBackend::handing_over(|_, wire| async move { drop(wire) }).await;
    let b = Backend::start("b").await;
    let lb = start(&[dying.addr, b.addr], "", "retries = 1").await;
    let client = support::client();
    // P2C picks either; keep asking until the dying backend has seen a request.
    let mut sent = 0;
    while dying.taken_all().is_empty() {
        assert!(sent < 60, "the dying backend was never picked");
        let (status, body) = get(&client, &lb.url("/idempotent")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
        sent += 1;
    }
    assert_eq!(b.hits(), sent, "every request answered by b exactly once");
    lb.log_eventually("backend request failed", WAIT).await;
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_replaced_when_the_backend_closes_one() {
    // Answers four requests per connection, the fourth with `Connection: close`.
    let mut backend = RawBackend::handing_over(|_, mut wire| async move {
        for exchange in 1..=4 {
            let close = if exchange == 4 {
                "Connection: close\r\n"
            } else {
                ""
            };
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{close}\r\nhi");
            if wire.stream.write_all(response.as_bytes()).await.is_err() || exchange == 4 {
                return;
            }
            if wire.head().await.is_none() {
                return;
            }
        }
    })
    .await;
    let lb = start(&[backend.addr], "", "").await;
    let client = support::client();
    for i in 0..10 {
        let (status, body) = get(&client, &lb.url(&format!("/{i}"))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "hi"),
            "request {i}"
        );
    }
    // A backend handing over reports the first head of each connection: 4 + 4 + 2 requests.
    let opened = backend.taken_all().len();
    assert_eq!(opened, 3, "connections to the backend were not reused");
}

// === 7. limits and hostile input ===

#[tokio::test]
async fn oversized_heads_get_431_and_never_reach_a_backend() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;

    let big = "v".repeat(70 * 1024);
    let mut client = TcpStream::connect(lb.http).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // lb may stop reading before the whole head is written; that is fine.
    let _ = client.write_all(request.as_bytes()).await;
    let response = read_to_close(&mut client, WAIT).await;
    assert_eq!(status_of(&response), 431, "{response}");

    // A large but legal head passes.
    let fine = "v".repeat(32 * 1024);
    let mut client = TcpStream::connect(lb.http).await.unwrap();
    let request =
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {fine}\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let response = read_to_close(&mut client, WAIT).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(backend.started(), 1);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_and_a_closed_connection() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;

    let smuggles = [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        // Behind an innocent chunked request on the same connection.
        "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for (i, smuggle) in smuggles.iter().enumerate() {
        let mut client = TcpStream::connect(lb.http).await.unwrap();
        client.write_all(smuggle.as_bytes()).await.unwrap();
        let response = read_to_close(&mut client, WAIT).await;
        let last = response.rfind("HTTP/1.1 ").unwrap_or(0);
        assert_eq!(status_of(&response[last..]), 400, "case {i}: {response}");
    }
    // Only the innocent first request of the last case reached the backend.
    assert_eq!(backend.started(), 1);
    assert_eq!(backend.seen()[0].path_and_query, "/first");
}

#[tokio::test]
async fn invalid_header_bytes_get_400() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "", "").await;
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    ] {
        let mut client = TcpStream::connect(lb.http).await.unwrap();
        client.write_all(bad).await.unwrap();
        let response = read_to_close(&mut client, WAIT).await;
        assert_eq!(status_of(&response), 400, "{response}");
    }
    assert_eq!(backend.started(), 0);
}

/// Connections with a request in flight are never closed for a new one (idle ones are:
/// tests/connection_budget.rs): past `max_connections` of them, a new client waits in the backlog.
#[tokio::test]
async fn max_connections_caps_open_client_connections() {
    let backend = Backend::start("a").await;
    let lb = start(&[backend.addr], "max_connections = 2", "").await;

    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(lb.http).await.unwrap();
        client
            .write_all(b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        open.push(client);
    }
    eventually(
        Duration::from_secs(5),
        "both requests at the backend",
        || async { backend.started() == 2 },
    )
    .await;
    // The third waits in the backlog: connected by the kernel, not served by lb.
    let mut third = TcpStream::connect(lb.http).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(300), third.read(&mut byte))
            .await
            .is_err(),
        "a third connection was served over max_connections = 2"
    );
    // A request answered leaves its connection idle, which lets the third in.
    assert_eq!(status_of(&read_head(&mut open[0]).await), 200);
    assert_eq!(status_of(&read_head(&mut third).await), 200);
}

// === 8. errors ===

#[tokio::test]
async fn errors_are_short_distinct_and_fast() {
    let sick = Backend::start("sick").await;
    sick.set_healthy(false);
    let lb = Lb::start(&config(&[sick.addr], "", ""));
    let started = Instant::now();
    let (status, body) = get(&support::client(), &lb.url("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n")
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(sick.started(), 0);
}
