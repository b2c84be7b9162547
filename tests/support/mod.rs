//! Shared test support: start the real `lb` binary and in-process backends on 127.0.0.1:0,
//! talk HTTP to them, and poll for conditions with a deadline (never a bare sleep).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod certs;
pub mod raw;
pub mod remote;

#[allow(clippy::disallowed_types)]
type Mutex<T> = std::sync::Mutex<T>;

/// The runtime every in-process test backend runs on: threads of its own, so a test thread
/// blocked in [`Lb::start`] (which waits for lb's log line) never starves a backend that lb
/// probes before it announces its listeners.
fn backend_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-backend")
            .enable_all()
            .build()
            .expect("the test backends' runtime")
    })
}

/// `127.0.0.1:0`: a test backend's address before the kernel picks the port.
pub const LOOPBACK_ANY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Runs `register` in the backends' runtime, so the sockets it makes are driven there.
pub fn on_backends<T>(register: impl FnOnce() -> T) -> T {
    let _on_backends = backend_runtime().enter();
    register()
}

/// A listener on `addr` whose connections are served on the backends' runtime.
pub fn backend_listener(addr: SocketAddr) -> TcpListener {
    let _on_backends = backend_runtime().enter();
    let listener = std::net::TcpListener::bind(addr).expect("bind a test backend");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    TcpListener::from_std(listener).expect("register the listener")
}

/// Runs a test backend's task on the backends' runtime (tasks it spawns stay there).
pub fn spawn_backend<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    backend_runtime().spawn(task)
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; panics with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === lb process ===

/// A running `lb` child process with its own config directory; killed on drop.
pub struct Lb {
    child: Child,
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    /// Always `Some` until [`Lb::restart`] moves it into the next process.
    dir: Option<tempfile::TempDir>,
    pub config: PathBuf,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lb {
    /// Writes `config_text` to a fresh `lb.toml` and starts lb on it.
    pub fn start(config_text: &str) -> Lb {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("lb.toml");
        std::fs::write(&config, config_text).expect("write config");
        Lb::start_at(dir, config, &[])
    }

    /// Starts lb on an existing config path inside `dir`, with extra arguments.
    pub fn start_at(dir: tempfile::TempDir, config: PathBuf, extra: &[&str]) -> Lb {
        let mut args = vec!["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Lb::start_with_args(dir, config, &args)
    }

    /// Starts lb on `config` with exactly these arguments after `--config PATH` (so the test
    /// chooses the listen addresses, e.g. a control listener on `0.0.0.0:0`).
    pub fn start_with_args(dir: tempfile::TempDir, config: PathBuf, args: &[&str]) -> Lb {
        Lb::spawn(Command::new(env!("CARGO_BIN_EXE_lb")), dir, config, args)
    }

    /// [`Lb::start`] with the watcher's periodic re-read off (`LB_WATCH_POLL=off`): a change
    /// is seen through file notification or not at all, so a watcher test fails when
    /// notification fails.
    pub fn start_notified(config_text: &str) -> Lb {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("lb.toml");
        std::fs::write(&config, config_text).expect("write config");
        Lb::start_at_notified(dir, config)
    }

    /// [`Lb::start_at`] with the watcher's periodic re-read off, as [`Lb::start_notified`].
    pub fn start_at_notified(dir: tempfile::TempDir, config: PathBuf) -> Lb {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.env("LB_WATCH_POLL", "off");
        Lb::spawn(
            command,
            dir,
            config,
            &["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    /// Starts lb as an unprivileged user (nobody, through `setpriv`) when the tests run as
    /// root, so that file permissions apply to it; `dir` is opened up for that user to read.
    pub fn start_unprivileged(dir: tempfile::TempDir, config: PathBuf) -> Lb {
        use std::os::unix::fs::PermissionsExt;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        let command = if root {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("open the test dir");
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666))
                .expect("open the config");
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_lb"));
            command
        } else {
            Command::new(env!("CARGO_BIN_EXE_lb"))
        };
        Lb::spawn(
            command,
            dir,
            config,
            &["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        )
    }

    fn spawn(mut command: Command, dir: tempfile::TempDir, config: PathBuf, args: &[&str]) -> Lb {
        let mut child = command
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info,lb=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("LB_TEST_ECHO").is_some() {
                    eprintln!("[lb] {line}");
                }
                let (lines, ready) = &*sink;
                lines.lock().unwrap().push(line);
                ready.notify_all();
            }
        });
        let mut lb = Lb {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            grpc: None,
            dir: Some(dir),
            config,
            logs,
        };
        // Text logs say `listener="http" addr=...`; JSON logs `"listener":"http","addr":"..."`.
        let line = lb
            .try_wait_for_any(
                &["listener=\"http\"", "\"listener\":\"http\""],
                Duration::from_secs(20),
            )
            .unwrap_or_else(|| {
                panic!(
                    "lb never said where it listens; log:\n{}",
                    lb.logs().join("\n")
                )
            });
        lb.http = addr_in(&line);
        lb.grpc = lb
            .try_wait_for_any(
                &["listener=\"grpc\"", "\"listener\":\"grpc\""],
                Duration::from_secs(5),
            )
            .map(|line| addr_in(&line));
        lb
    }

    /// The directory holding the config file.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lb dir").path()
    }

    /// Kills this process and starts a new one on the same config file.
    pub fn restart(mut self, extra: &[&str]) -> Lb {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("lb dir");
        Lb::start_at(dir, self.config.clone(), extra)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `http://ADMIN/path` of an lb started with `--admin 127.0.0.1:0`: the address it logged.
    pub fn admin_url(&self, path: &str) -> String {
        let line = self.wait_for_log("listener=\"admin\"", Duration::from_secs(10));
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("admin addr in the log");
        format!("http://{addr}{path}")
    }

    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.logs
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().unwrap().clone()
    }

    pub fn try_wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.try_wait_for_any(&[needle], timeout)
    }

    /// Blocks until a stderr line contains one of `needles`, or `timeout` passes.
    pub fn try_wait_for_any(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lines, ready) = &*self.logs;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(line) = guard.iter().find(|l| needles.iter().any(|n| l.contains(n))) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = ready.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Blocks until a stderr line contains `needle`; panics with the log so far on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.try_wait_for_log(needle, timeout).unwrap_or_else(|| {
            panic!(
                "lb never logged {needle:?} within {timeout:?}; log:\n{}",
                self.logs().join("\n")
            )
        })
    }

    /// The async twin of [`Lb::wait_for_log`], for tests whose runtime must keep running.
    pub async fn log_eventually(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.find_log(needle) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "lb never logged {needle:?} within {timeout:?}; log:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_in(line: &str) -> SocketAddr {
    let (start, json) = match line.find("addr=") {
        Some(i) => (i + "addr=".len(), false),
        None => (
            line.find("\"addr\":\"").expect("addr in listening line") + "\"addr\":\"".len(),
            true,
        ),
    };
    let text: String = line[start..]
        .chars()
        .take_while(|c| !(c.is_whitespace() || (json && *c == '"')))
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("bad addr in {line:?}"))
}

// === in-process backends ===

/// What a test backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, String>,
    pub body_len: usize,
}

/// A programmable HTTP/1.1 backend on 127.0.0.1:0. `/healthz` answers `ok` while healthy;
/// `/slow/MS` waits MS milliseconds first; every other path answers with the backend's name.
/// Stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

struct BackendState {
    name: Bytes,
    healthy: AtomicBool,
    /// Requests that arrived (counted before any `/slow/` wait).
    started: AtomicUsize,
    /// Requests answered.
    hits: AtomicUsize,
    /// Milliseconds to wait before answering any non-health request.
    delay_ms: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl BackendState {
    async fn answer(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let (parts, incoming) = request.into_parts();
        if parts.uri.path() == "/healthz" {
            let text = if self.healthy.load(Ordering::SeqCst) {
                "ok"
            } else {
                "sick"
            };
            return Ok(Response::new(Full::new(Bytes::from(text))));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if let Some(ms) = parts.uri.path().strip_prefix("/slow/") {
            let ms: u64 = ms.parse().unwrap_or(500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let body_len = incoming
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body_len,
        });
        self.hits.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Full::new(self.name.clone())))
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on(LOOPBACK_ANY, name).await
    }

    /// Starts on a specific address (e.g. to bring a killed backend back on its old port).
    pub async fn start_on(addr: SocketAddr, name: &str) -> Backend {
        let listener = backend_listener(addr);
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            name: Bytes::from(name.to_owned()),
            healthy: AtomicBool::new(true),
            started: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            delay_ms: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let task = spawn_backend(async move {
            // Connections live in a JoinSet owned by this task, so killing the backend also
            // closes its open keep-alive connections, as a killed process would.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let state = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { state.answer(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_owned(),
            state,
            task,
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes every non-health request wait `ms` milliseconds.
    pub fn set_delay_ms(&self, ms: usize) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests that arrived (counted before any `/slow/` wait).
    pub fn started(&self) -> usize {
        self.state.started.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops accepting and closes the listener, like a killed process.
    pub async fn kill(mut self) -> SocketAddr {
        self.task.abort();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === HTTP client ===

/// An HTTP/2 client connection over `io` (TLS that negotiated `h2`, or cleartext h2c), with
/// its connection task spawned.
pub async fn h2_connection<T>(
    io: T,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET uri` on an HTTP/2 connection within 10 s: the status, the version and the whole body.
pub async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    uri: &str,
) -> (StatusCode, http::Version, Bytes) {
    let request = Request::get(uri)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    let (status, version) = (response.status(), response.version());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, version, body)
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A GET through a fresh connection-pooling client; returns status and body text.
pub async fn get(client: &HttpClient, url: &str) -> (StatusCode, String) {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    send(client, request).await
}

pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A pool table over the given backends with a fast health-check interval.
pub fn pool(pattern: &str, backends: &[SocketAddr], interval: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("  \"{b}\",")).collect();
    format!(
        "[pools.\"{pattern}\"]\ninterval = \"{interval}\"\nbackends = [\n{}\n]\n",
        list.join("\n")
    )
}

pub fn sample_web_bin() -> PathBuf {
    // sample-web is another package of the workspace; it is built into the same target dir.
    let lb = Path::new(env!("CARGO_BIN_EXE_lb"));
    lb.with_file_name(format!("sample-web{}", std::env::consts::EXE_SUFFIX))
}

// === process signals and memory (appended for tests/proxy.rs and tests/shutdown.rs) ===

impl Lb {
    /// Sends SIGTERM without waiting, so an async test can keep driving requests meanwhile.
    pub fn send_term(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Polls (async) for the exit status until `timeout`; `None` if still running.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lb process's peak resident set size (`VmHWM` in /proc), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

// === control API ===

pub type Control =
    lb::control::proto::load_balancer_client::LoadBalancerClient<tonic::transport::Channel>;

/// A gRPC client of lb's control API.
pub async fn control(lb: &Lb) -> Control {
    let url = format!("http://{}", lb.grpc.expect("grpc listener"));
    Control::connect(url).await.expect("connect to control API")
}

/// The control API's Status: the applied generation, the last reload's outcome and error.
pub async fn status(lb: &Lb) -> lb::control::proto::StatusResp {
    control(lb)
        .await
        .status(lb::control::proto::StatusReq::default())
        .await
        .expect("Status")
        .into_inner()
}

/// Waits (bounded) until Status reports a generation of at least `generation`; returns it.
pub async fn generation_reached(
    lb: &Lb,
    generation: u64,
    timeout: Duration,
) -> lb::control::proto::StatusResp {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status(lb).await;
        if status.generation >= generation {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} not applied within {timeout:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until Status reports a failed last reload; returns its error.
pub async fn reload_error(lb: &Lb, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status(lb).await;
        if !status.last_reload_ok && !status.last_error.is_empty() {
            return status.last_error;
        }
        assert!(
            Instant::now() < deadline,
            "no failed reload within {timeout:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether PoolHealth reports the backend at `addr` of pool `pattern` healthy.
pub async fn backend_is_healthy(lb: &Lb, pattern: &str, addr: SocketAddr) -> bool {
    use lb::control::proto::{backend, BackendStatus};
    let health = pool_health(&mut control(lb).await, pattern).await;
    health.backends.iter().any(|b| {
        b.status == BackendStatus::BsHealthy as i32
            && matches!(
                b.backend.as_ref().and_then(|b| b.backend.as_ref()),
                Some(backend::Backend::IpBackend(ip))
                    if ip.ip == addr.ip().to_string() && ip.port == i32::from(addr.port())
            )
    })
}

/// Waits (bounded) until PoolHealth reports the backend at `addr` of pool `pattern` healthy.
pub async fn healthy_eventually(lb: &Lb, pattern: &str, addr: SocketAddr, timeout: Duration) {
    eventually(
        timeout,
        &format!("{addr} healthy in pool {pattern}"),
        || backend_is_healthy(lb, pattern, addr),
    )
    .await;
}

/// `IP:PORT` + url_path as the wire's `Backend` oneof.
pub fn ip_backend(addr: SocketAddr, url_path: &str) -> Option<lb::control::proto::Backend> {
    use lb::control::proto;
    Some(proto::Backend {
        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
            ip: addr.ip().to_string(),
            port: i32::from(addr.port()),
            url_path: url_path.to_owned(),
        })),
    })
}

/// Runs the real `lbctl` against `lb`; returns (success, stdout, stderr).
pub fn lbctl(lb: &Lb, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.expect("grpc listener")))
        .args(args)
        .output()
        .expect("run lbctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// === steady load ===

/// `n` client tasks sending `GET /` to lb until stopped (or 40 s pass), counting answers.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(lb: &Arc<Lb>, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..n)
            .map(|_| {
                let (lb, stop) = (Arc::clone(lb), Arc::clone(&stop));
                let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let client = client();
                    let deadline = Instant::now() + Duration::from_secs(40);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match get(&client, &lb.url("/")).await {
                            (StatusCode::OK, _) => ok.fetch_add(1, Ordering::SeqCst),
                            (status, body) => {
                                eprintln!("failed request: {status} {body:?}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the load and returns (ok, failed).
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("load task");
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// PoolHealth of `pattern`, listing healthy and sick backends.
pub async fn pool_health(client: &mut Control, pattern: &str) -> lb::control::proto::PoolHealth {
    let request = lb::control::proto::PoolHealthReq {
        pattern: pattern.to_owned(),
        healthy: true,
        sick: true,
    };
    client
        .pool_health(request)
        .await
        .expect("PoolHealth")
        .into_inner()
        .health
        .expect("PoolHealth has health")
}

/// `lb check` on a file holding `text`: whether it passed, and its stderr with the file's path
/// written as `PATH`.
pub fn lb_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "PATH");
    (out.status.success(), stderr)
}

/// An `AddPool` request for `pattern`: a P2C pool with one `/healthz` check answering `ok`.
pub fn add_pool_req(pattern: &str) -> lb::control::proto::AddPoolReq {
    lb::control::proto::AddPoolReq {
        pattern: pattern.to_owned(),
        pool_type: lb::control::proto::PoolType::PtP2c as i32,
        health_checks: Some(lb::control::proto::HealthChecks {
            health_checks: vec![lb::control::proto::HealthCheck {
                health_check: Some(lb::control::proto::health_check::HealthCheck::StatusCheck(
                    lb::control::proto::StatusCheck {
                        url_path: "/healthz".to_owned(),
                        healthy_values: vec!["ok".to_owned()],
                    },
                )),
            }],
            interval_secs: 1,
        }),
        if_match: None,
    }
}

// === sample-web processes ===

/// A `sample-web` process on 127.0.0.1 (port 0), killed when dropped.
pub struct SampleWeb {
    child: Child,
    pub addr: SocketAddr,
}

impl SampleWeb {
    /// Starts `sample-web --port 0 ARGS` and waits (bounded) for the address it says it bound.
    pub fn start(args: &[&str]) -> SampleWeb {
        let mut child = Command::new(sample_web_bin())
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sample-web");
        let stderr = child.stderr.take().expect("sample-web stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.rsplit("listening on ").next() {
                    if let Ok(addr) = addr.trim().parse::<SocketAddr>() {
                        let _ = sender.send(addr);
                    }
                }
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("sample-web said where it listens");
        SampleWeb { child, addr }
    }

    /// The process id, for a test's script that stops it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SampleWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
