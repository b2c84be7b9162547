//! SIGTERM: stop accepting, let in-flight requests and open upgrade tunnels finish within
//! `drain_timeout`, end health watches, close what is still open at the deadline, exit 0.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::raw::{read_head, RawBackend};
use support::{eventually, get, Backend, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn config(backend: std::net::SocketAddr, drain_timeout: &str) -> String {
    format!(
        "[server]\ndrain_timeout = \"{drain_timeout}\"\n\n[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{backend}\"]\n"
    )
}

async fn started(backend: std::net::SocketAddr, drain_timeout: &str) -> Lb {
    let lb = Lb::start(&config(backend, drain_timeout));
    support::healthy_eventually(&lb, "/", backend, WAIT).await;
    lb
}

#[tokio::test]
async fn sigterm_refuses_new_connections_and_finishes_the_request_in_flight() {
    let backend = Backend::start("a").await;
    let mut lb = started(backend.addr, "10s").await;
    let url = lb.url("/slow/1500");
    let in_flight = tokio::spawn(async move { get(&support::client(), &url).await });
    eventually(WAIT, "the slow request reached the backend", || async {
        backend.started() == 1
    })
    .await;

    lb.send_term();
    lb.log_eventually("draining client connections", WAIT).await;
    assert!(
        TcpStream::connect(lb.http).await.is_err(),
        "a new connection was accepted while draining"
    );
    let (status, body) = timeout(WAIT, in_flight).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    let status = lb.exit_within(WAIT).await.expect("lb exited");
    assert_eq!(status.code(), Some(0));
}

/// A raw backend: `/stall` gets a head and part of its body, then silence with the connection
/// held open; anything else gets 101 and an echo.
async fn upgrade_backend() -> RawBackend {
    RawBackend::handing_over(|seen, mut wire| async move {
        if seen.method() == "GET" && seen.target() == "/stall" {
            let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
            if wire.stream.write_all(partial).await.is_ok() {
                // Holds the connection until lb closes it.
                let _ = wire.stream.read_to_end(&mut Vec::new()).await;
            }
            return;
        }
        let switching =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        if wire.stream.write_all(switching).await.is_ok() {
            wire.echo().await;
        }
    })
    .await
}

async fn open_tunnel(lb: &Lb) -> TcpStream {
    let mut client = TcpStream::connect(lb.http).await.unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client
}

async fn ping(tunnel: &mut TcpStream, text: &[u8]) {
    tunnel.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    timeout(WAIT, tunnel.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("tunnel open");
    assert_eq!(back, text);
}

#[tokio::test]
async fn an_open_tunnel_may_finish_while_draining() {
    let backend = upgrade_backend().await;
    let mut lb = started(backend.addr, "20s").await;
    let mut tunnel = open_tunnel(&lb).await;
    ping(&mut tunnel, b"before").await;

    lb.send_term();
    lb.log_eventually("draining client connections", WAIT).await;
    ping(&mut tunnel, b"while draining").await;
    assert!(lb.exit_within(Duration::from_millis(200)).await.is_none());

    // The client ends the tunnel; lb exits long before its 20 s drain timeout.
    let closed = Instant::now();
    drop(tunnel);
    let status = lb.exit_within(WAIT).await.expect("lb exited");
    assert_eq!(status.code(), Some(0));
    assert!(closed.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_tunnel_left_open_is_cut_at_drain_timeout() {
    let backend = upgrade_backend().await;
    let mut lb = started(backend.addr, "1s").await;
    let mut tunnel = open_tunnel(&lb).await;
    ping(&mut tunnel, b"hello").await;

    let term = Instant::now();
    lb.send_term();
    let status = lb.exit_within(WAIT).await.expect("lb exited");
    assert_eq!(status.code(), Some(0));
    let took = term.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    let mut rest = Vec::new();
    let _ = timeout(WAIT, tunnel.read_to_end(&mut rest))
        .await
        .expect("tunnel closed");
}

/// `lbctl watch` (the real binary) against `lb`, its stdout and stderr piped.
fn spawn_watch(lb: &Lb) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.expect("grpc listener")))
        .arg("watch")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lbctl watch")
}

#[tokio::test]
async fn sigterm_ends_lb_within_drain_timeout_whatever_is_open() {
    let backend = upgrade_backend().await;
    let mut lb = started(backend.addr, "1s").await;
    let watch = spawn_watch(&lb);
    lb.log_eventually("health watch opened", WAIT).await;
    // A proxied request whose backend sent a head and then went silent.
    let mut stalled = TcpStream::connect(lb.http).await.unwrap();
    stalled
        .write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stalled).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut tunnel = open_tunnel(&lb).await;
    ping(&mut tunnel, b"hello").await;

    let term = Instant::now();
    lb.send_term();
    let status = lb
        .exit_within(Duration::from_secs(2))
        .await
        .unwrap_or_else(|| {
            panic!(
                "lb still running 2 s after SIGTERM with drain_timeout 1s; log:\n{}",
                lb.logs().join("\n")
            )
        });
    assert_eq!(status.code(), Some(0));
    let took = term.elapsed();
    assert!(took >= Duration::from_millis(900), "took {took:?}");

    // The watch ends with a word from lb, not a transport error.
    let watched = timeout(WAIT, watch.wait_with_output())
        .await
        .expect("lbctl watch ended")
        .expect("lbctl watch output");
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(stderr.contains("lb is shutting down"), "{stderr}");
    // The stalled response and the tunnel are closed, not left hanging.
    for (what, stream) in [("stalled response", &mut stalled), ("tunnel", &mut tunnel)] {
        let mut rest = Vec::new();
        let read = timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{what} still open after lb exited");
    }
}

/// A backend that accepts connections, says nothing, and reports each accept.
async fn silent_backend() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<TcpStream>) {
    let listener = support::backend_listener(support::LOOPBACK_ANY);
    let addr = listener.local_addr().unwrap();
    let (accepted, rx) = tokio::sync::mpsc::channel(16);
    support::spawn_backend(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if accepted.send(stream).await.is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn an_rpc_in_flight_at_sigterm_finishes() {
    use lb::control::proto;
    let backend = upgrade_backend().await;
    let mut lb = started(backend.addr, "5s").await;
    let (silent, mut accepted) = silent_backend().await;
    let mut client = support::control(&lb).await;
    // AddBackend probes the new backend first; this one never answers, so the probe runs into
    // its timeout (1 s) while lb shuts down.
    let add = tokio::spawn(async move {
        client
            .add_backend(proto::AddBackendReq {
                pattern: "/".into(),
                backend: support::ip_backend(silent, ""),
                ..Default::default()
            })
            .await
    });
    let _probe = timeout(WAIT, accepted.recv())
        .await
        .expect("AddBackend probed the backend")
        .expect("a connection");

    lb.send_term();
    let answer = timeout(WAIT, add)
        .await
        .expect("AddBackend answered")
        .unwrap();
    let status = answer.expect_err("an unanswering backend is refused");
    assert_eq!(
        status.code(),
        tonic::Code::FailedPrecondition,
        "the RPC ran to its own end: {}",
        status.message()
    );
    let status = lb.exit_within(WAIT).await.expect("lb exited");
    assert_eq!(status.code(), Some(0));
}

/// `Lb::run` in this process: it returns by the drain deadline and has closed the client
/// connections still open then (this runtime goes on, so nothing else would close them).
#[tokio::test]
async fn run_returns_at_the_drain_deadline_having_closed_stalled_connections() {
    let backend = upgrade_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, self::config(backend.addr, "1s")).unwrap();
    let lb = lb::Lb::bind(lb::Options {
        config,
        http: Some("127.0.0.1:0".parse().unwrap()),
        grpc: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .expect("lb binds");
    let http = lb.http_addr();
    let applier = std::sync::Arc::clone(lb.applier());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(lb.run(async {
        let _ = stopped.await;
    }));
    eventually(WAIT, "the backend's first probe passed", || async {
        applier
            .topology()
            .load()
            .pool("/")
            .is_some_and(|pool| pool.n_healthy() == 1)
    })
    .await;
    let mut stalled = TcpStream::connect(http).await.unwrap();
    stalled
        .write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stalled).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let begun = Instant::now();
    stop.send(()).unwrap();
    timeout(Duration::from_secs(2), run)
        .await
        .expect("run returned within drain_timeout + 1 s")
        .unwrap()
        .expect("run ended cleanly");
    assert!(begun.elapsed() >= Duration::from_millis(900));
    let mut rest = Vec::new();
    timeout(Duration::from_secs(1), stalled.read_to_end(&mut rest))
        .await
        .expect("the stalled connection is closed once run returns")
        .ok();
}
