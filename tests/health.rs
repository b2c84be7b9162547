//! Health: the check rule (2xx and a trimmed body equal to a healthy value), rise and fall,
//! checkers spread over the interval, passive ejection that never empties a pool, and idle
//! backend connections closed on time and when their backend leaves the file.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::raw::{Wire, WAIT};
use support::{eventually, get, Lb};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

#[allow(clippy::disallowed_types)]
type Mutex<T> = std::sync::Mutex<T>;

/// A backend whose `/healthz` answer (status and body) the test sets, which records when each
/// probe arrived and counts its open connections that served a proxied request. `GET /slow` is
/// answered after [`SLOW`], any other request at once with the backend's name. A probe's
/// connection closes after the answer, so probes never count as open connections.
struct CheckedBackend {
    addr: SocketAddr,
    health: Arc<Mutex<(u16, String)>>,
    /// When each probe arrived, and the status it was answered with.
    probes: Arc<Mutex<Vec<(Instant, u16)>>>,
    open: Arc<AtomicUsize>,
    /// `GET /slow` requests that arrived (each is answered after [`SLOW`]).
    slow: Arc<AtomicUsize>,
    /// Milliseconds each probe waits before it is answered.
    probe_delay_ms: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

/// How long a backend takes to answer `GET /slow`.
const SLOW: Duration = Duration::from_secs(3);

impl CheckedBackend {
    async fn start(name: &str, status: u16, body: &str) -> CheckedBackend {
        let listener = support::backend_listener(support::LOOPBACK_ANY);
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Mutex::new((status, body.to_owned())));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let slow = Arc::new(AtomicUsize::new(0));
        let probe_delay_ms = Arc::new(AtomicU64::new(0));
        let (shared_health, shared_probes, shared_open, shared_slow, shared_delay) = (
            Arc::clone(&health),
            Arc::clone(&probes),
            Arc::clone(&open),
            Arc::clone(&slow),
            Arc::clone(&probe_delay_ms),
        );
        let name = name.to_owned();
        let accept = support::spawn_backend(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (health, probes, open, slow, delay) = (
                    Arc::clone(&shared_health),
                    Arc::clone(&shared_probes),
                    Arc::clone(&shared_open),
                    Arc::clone(&shared_slow),
                    Arc::clone(&shared_delay),
                );
                let name = name.clone();
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream, None);
                    let mut counted = false;
                    while let Some((head, _body)) = wire.request().await {
                        if head.starts_with("GET /healthz ") {
                            let delay = delay.load(Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let (status, body) = health.lock().unwrap().clone();
                            probes.lock().unwrap().push((Instant::now(), status));
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = wire.stream.write_all(answer.as_bytes()).await;
                            break;
                        }
                        if !counted {
                            counted = true;
                            open.fetch_add(1, Ordering::SeqCst);
                        }
                        if head.starts_with("GET /slow ") {
                            slow.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(SLOW).await;
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if wire.stream.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    if counted {
                        open.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        CheckedBackend {
            addr,
            health,
            probes,
            open,
            slow,
            probe_delay_ms,
            accept,
        }
    }

    /// Makes each probe wait `delay` before it is answered.
    fn set_probe_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.probe_delay_ms.store(ms, Ordering::SeqCst);
    }

    fn set_health(&self, status: u16, body: &str) {
        *self.health.lock().unwrap() = (status, body.to_owned());
    }

    fn probes(&self) -> Vec<(Instant, u16)> {
        self.probes.lock().unwrap().clone()
    }

    /// Connections that served a proxied request and are still open.
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for CheckedBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn pool(pattern: &str, keys: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[pools.\"{pattern}\"]\n{keys}backends = [{}]\n",
        list.join(", ")
    )
}

// === start ===

/// lb announces its listeners only once every enabled backend has had its first probe, so the
/// first request after start finds the backends that are up already in rotation (as a reload
/// does since probe-before-swap), not a 503 while the first checks are still in flight.
#[tokio::test]
async fn the_first_request_after_start_is_served_while_first_probes_are_slow() {
    let backend = CheckedBackend::start("up", 200, "ok").await;
    backend.set_probe_delay(Duration::from_millis(400));
    let lb = Lb::start(&pool("/", "interval = \"10s\"\n", &[backend.addr]));
    let client = support::client();
    let (status, body) = get(&client, &lb.url("/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
}

// === the check rule ===

#[tokio::test]
async fn a_check_passes_on_2xx_with_a_trimmed_body_equal_to_a_healthy_value() {
    let broken = CheckedBackend::start("broken", 500, "broken").await;
    let okay = CheckedBackend::start("okay", 200, "okay").await;
    let padded = CheckedBackend::start("padded", 200, "  ok\n").await;
    let lb = Lb::start(&format!(
        "{}{}{}",
        pool("/a/", "interval = \"1h\"\n", &[broken.addr]),
        pool("/b/", "interval = \"1h\"\n", &[okay.addr]),
        pool("/c/", "interval = \"1h\"\n", &[padded.addr]),
    ));
    lb.log_eventually(
        &format!("backend healthy pool=/c/ backend={}", padded.addr),
        WAIT,
    )
    .await;
    // "broken" contains "ok", and so does "okay"; neither is healthy.
    let sick = lb
        .log_eventually(
            &format!("backend sick pool=/a/ backend={}", broken.addr),
            WAIT,
        )
        .await;
    assert!(
        sick.contains("500") && sick.contains("broken") && sick.contains("2xx"),
        "the reason says what came and what was expected: {sick}"
    );
    let sick = lb
        .log_eventually(
            &format!("backend sick pool=/b/ backend={}", okay.addr),
            WAIT,
        )
        .await;
    assert!(sick.contains("okay"), "{sick}");
    assert!(lb.find_log("backend healthy pool=/a/").is_none());
    assert!(lb.find_log("backend healthy pool=/b/").is_none());

    let client = support::client();
    assert_eq!(get(&client, &lb.url("/c/")).await.0, StatusCode::OK);
    assert_eq!(
        get(&client, &lb.url("/a/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&client, &lb.url("/b/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

// === passive ejection ===

/// Every backend of a pool refuses connections for a moment (a restart of all of them, a full
/// accept queue): the failing requests get 502, but the last backend stays in rotation, so the
/// pool serves again as soon as a backend is back, without waiting for an active check.
#[tokio::test]
async fn a_burst_of_refused_connects_never_empties_a_pool() {
    let (a, b) = (
        support::Backend::start("a").await,
        support::Backend::start("b").await,
    );
    let lb = Lb::start(&pool("/", "interval = \"1h\"\n", &[a.addr, b.addr]));
    for addr in [a.addr, b.addr] {
        support::healthy_eventually(&lb, "/", addr, WAIT).await;
    }
    let (a_addr, b_addr) = (a.kill().await, b.kill().await);
    let client = support::client();
    for _ in 0..20 {
        let (status, body) = get(&client, &lb.url("/")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    }
    lb.log_eventually("connect failed; backend out of rotation", WAIT)
        .await;
    let ejections = lb
        .logs()
        .iter()
        .filter(|l| l.contains("connect failed; backend out of rotation"))
        .count();
    assert_eq!(ejections, 1, "only one of the two leaves rotation");

    // Whichever stayed in rotation comes back: traffic flows at once.
    let (_a, _b) = (
        support::Backend::start_on(a_addr, "a").await,
        support::Backend::start_on(b_addr, "b").await,
    );
    let (status, body) = get(&client, &lb.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// === rise and fall ===

/// Probes answered with `status` so far.
fn answered(backend: &CheckedBackend, status: u16) -> usize {
    backend
        .probes()
        .iter()
        .filter(|(_, s)| *s == status)
        .count()
}

#[tokio::test]
async fn fall_failures_in_a_row_take_a_backend_out_and_rise_passes_bring_it_back() {
    let backend = CheckedBackend::start("b", 200, "ok").await;
    let lb = Lb::start(&pool(
        "/",
        "interval = \"300ms\"\nrise = 3\nfall = 2\n",
        &[backend.addr],
    ));
    let healthy = format!("backend healthy pool=/ backend={}", backend.addr);
    lb.log_eventually(&healthy, WAIT).await;
    let client = support::client();

    backend.set_health(503, "down");
    eventually(WAIT, "a failing probe", || async {
        answered(&backend, 503) >= 1
    })
    .await;
    // One failure is not `fall`: still in rotation (strictly so while the second failing probe
    // has not been answered, before and after the request).
    let (n_before, status, n_after) = (
        answered(&backend, 503),
        get(&client, &lb.url("/")).await.0,
        answered(&backend, 503),
    );
    if n_before == 1 && n_after == 1 {
        assert_eq!(status, StatusCode::OK);
    }
    let sick = format!("backend sick pool=/ backend={}", backend.addr);
    lb.log_eventually(&sick, WAIT).await;
    assert!(answered(&backend, 503) >= 2, "{:?}", backend.probes());
    assert_eq!(
        get(&client, &lb.url("/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let before = answered(&backend, 200);
    backend.set_health(200, "ok");
    eventually(WAIT, "two passing probes", || async {
        answered(&backend, 200) >= before + 2
    })
    .await;
    // Two passes are not `rise`: still out. Strictly so while the third probe has not been
    // answered, before and after the request (then lb cannot have seen it).
    let (n_before, status, n_after) = (
        answered(&backend, 200),
        get(&client, &lb.url("/")).await.0,
        answered(&backend, 200),
    );
    if n_before == before + 2 && n_after == before + 2 {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    eventually(WAIT, "back in rotation", || async {
        lb.logs().iter().filter(|l| l.contains(&healthy)).count() == 2
    })
    .await;
    assert!(
        answered(&backend, 200) >= before + 3,
        "{:?}",
        backend.probes()
    );
    assert_eq!(get(&client, &lb.url("/")).await.0, StatusCode::OK);
}

// === jitter ===

/// The checkers of a pool probe each new backend at once, then each on its own phase of the
/// interval: a pool of 4 with a 2 s interval is probed every half second, not 4 at a time.
#[tokio::test]
async fn the_checkers_of_a_pool_are_spread_over_the_interval() {
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        backends.push(CheckedBackend::start(name, 200, "ok").await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let started = Instant::now();
    let _lb = Lb::start(&pool("/", "interval = \"2s\"\n", &addrs));
    eventually(
        Duration::from_secs(6),
        "two probes of each backend",
        || async { backends.iter().all(|b| b.probes().len() >= 2) },
    )
    .await;
    let first: Vec<Instant> = backends.iter().map(|b| b.probes()[0].0).collect();
    for at in &first {
        assert!(
            at.duration_since(started) < Duration::from_secs(2),
            "a new backend is probed as soon as it is declared"
        );
    }
    let second: Vec<Instant> = backends.iter().map(|b| b.probes()[1].0).collect();
    let (earliest, latest) = (second.iter().min().unwrap(), second.iter().max().unwrap());
    let span = latest.duration_since(*earliest);
    eprintln!(
        "second probes at {:?} after lb started",
        second
            .iter()
            .map(|at| at.duration_since(started))
            .collect::<Vec<_>>()
    );
    assert!(
        span >= Duration::from_millis(500),
        "the second probes came within {span:?} of each other: {:?}",
        second
            .iter()
            .map(|at| at.duration_since(started))
            .collect::<Vec<_>>()
    );
}

// === idle backend connections ===

/// Sends `n` requests at once, each on its own client connection, so lb opens (and then keeps)
/// several connections to the pool's backends.
async fn concurrent_requests(lb: &Lb, n: usize) {
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = lb.url("/");
        requests.spawn(async move { get(&support::client(), &url).await.0 });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn idle_backend_connections_close_when_their_idle_timeout_passes() {
    let backend = CheckedBackend::start("b", 200, "ok").await;
    let lb = Lb::start(&pool(
        "/",
        "interval = \"1h\"\nidle_timeout = \"1s\"\n",
        &[backend.addr],
    ));
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        WAIT,
    )
    .await;
    concurrent_requests(&lb, 8).await;
    assert!(backend.open() > 0, "lb keeps its backend connections");
    let idle_since = Instant::now();
    // No request, and no probe either (the interval is an hour): only a timer can close them.
    eventually(
        Duration::from_secs(5),
        "idle connections closed",
        || async { backend.open() == 0 },
    )
    .await;
    eprintln!(
        "idle connections closed {:?} after the last request",
        idle_since.elapsed()
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before their idle timeout",
        idle_since.elapsed()
    );
}

/// The removed backend still has a request in flight (which holds on to its state): its idle
/// connections close when it leaves the file all the same, and the busy one when its response
/// ends.
#[tokio::test]
async fn connections_to_a_backend_removed_from_the_file_are_closed() {
    let (removed, added) = (
        CheckedBackend::start("removed", 200, "ok").await,
        CheckedBackend::start("added", 200, "ok").await,
    );
    let lb = Arc::new(Lb::start(&pool(
        "/",
        "interval = \"1h\"\n",
        &[removed.addr],
    )));
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", removed.addr),
        WAIT,
    )
    .await;
    concurrent_requests(&lb, 8).await;
    let n_open = removed.open();
    assert!(n_open >= 2, "lb keeps several connections: {n_open}");
    let slow = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move { get(&support::client(), &lb.url("/slow")).await })
    };
    eventually(WAIT, "the slow request at the backend", || async {
        removed.slow.load(Ordering::SeqCst) == 1
    })
    .await;
    let removed_at = Instant::now();
    std::fs::write(&lb.config, pool("/", "interval = \"1h\"\n", &[added.addr])).unwrap();
    support::generation_reached(&lb, 2, WAIT).await;
    // Well before the slow response (SLOW after it arrived) ends the request's hold on the
    // backend.
    let deadline = SLOW - Duration::from_secs(1);
    eventually(
        deadline,
        "the removed backend's idle connections closed",
        || async { removed.open() <= 1 },
    )
    .await;
    assert!(removed_at.elapsed() < deadline);
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "removed"));
    eventually(
        WAIT,
        "the busy connection closed after its response",
        || async { removed.open() == 0 },
    )
    .await;
    assert_eq!(get(&support::client(), &lb.url("/")).await.1, "added");
}

// === health across reloads ===

/// A reload that changes the pool's check settings restarts its checkers but keeps every
/// backend's health: no request fails, and nobody is judged again from scratch.
#[tokio::test]
async fn health_survives_a_reload_that_changes_the_check_settings() {
    let (a, b) = (
        CheckedBackend::start("a", 200, "ok").await,
        CheckedBackend::start("b", 200, "ok").await,
    );
    let lb = Arc::new(Lb::start(&pool(
        "/",
        "interval = \"1h\"\n",
        &[a.addr, b.addr],
    )));
    for addr in [a.addr, b.addr] {
        support::healthy_eventually(&lb, "/", addr, WAIT).await;
    }
    let load = support::Load::start(&lb, 4);
    let keys = "interval = \"1h\"\nrise = 3\nfall = 3\ncheck_timeout = \"2s\"\n";
    std::fs::write(&lb.config, pool("/", keys, &[a.addr, b.addr])).unwrap();
    support::generation_reached(&lb, 2, WAIT).await;
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{ok} answered");
    let judged = lb
        .logs()
        .iter()
        .filter(|l| l.contains("backend healthy") || l.contains("backend sick"))
        .count();
    assert_eq!(judged, 2, "only the first probes judged the backends");
    let client = support::client();
    assert_eq!(get(&client, &lb.url("/")).await.0, StatusCode::OK);
}

/// A re-enabled backend is probed at once, not at its slot of an hour-long interval (half an
/// hour in: it is the second of two).
#[tokio::test]
async fn a_re_enabled_backend_is_probed_at_once() {
    let (a, b) = (
        CheckedBackend::start("a", 200, "ok").await,
        CheckedBackend::start("b", 200, "ok").await,
    );
    let list = |state: &str| {
        format!(
            "[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{}\", {{ addr = \"{}\", state = \"{state}\" }}]\n",
            b.addr, a.addr
        )
    };
    let lb = Lb::start(&list("enabled"));
    for addr in [a.addr, b.addr] {
        support::healthy_eventually(&lb, "/", addr, WAIT).await;
    }
    std::fs::write(&lb.config, list("disabled")).unwrap();
    support::generation_reached(&lb, 2, WAIT).await;
    let probes = a.probes().len();
    std::fs::write(&lb.config, list("enabled")).unwrap();
    support::generation_reached(&lb, 3, WAIT).await;
    let client = support::client();
    eventually(WAIT, "a takes traffic again", || async {
        get(&client, &lb.url("/")).await.1 == "a"
    })
    .await;
    assert_eq!(a.probes().len(), probes + 1);
}

/// A backend that comes up after lb started is in rotation about a `down_interval` (1 s by
/// default) later, not at the next tick of a long `interval`.
#[tokio::test]
async fn a_sick_backend_is_probed_every_down_interval() {
    let a = CheckedBackend::start("a", 503, "starting").await;
    let lb = Lb::start(&pool("/", "interval = \"1h\"\n", &[a.addr]));
    let client = support::client();
    eventually(WAIT, "a sick at start", || async { !a.probes().is_empty() }).await;
    assert_eq!(
        get(&client, &lb.url("/")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    a.set_health(200, "ok");
    let up = Instant::now();
    eventually(WAIT, "a in rotation", || async {
        get(&client, &lb.url("/")).await.1 == "a"
    })
    .await;
    assert!(
        up.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        up.elapsed()
    );
    // Healthy again: back on the hour-long interval, not probed every second.
    let probes = a.probes().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        a.probes().len(),
        probes,
        "a healthy backend was probed off its interval"
    );
}

/// `down_interval` is a pool key: set longer, a sick backend waits for it.
#[tokio::test]
async fn down_interval_is_read_from_the_pool() {
    let a = CheckedBackend::start("a", 503, "starting").await;
    let _lb = Lb::start(&pool(
        "/",
        "interval = \"1h\"\ndown_interval = \"300ms\"\n",
        &[a.addr],
    ));
    eventually(WAIT, "four probes of a sick backend", || async {
        answered(&a, 503) >= 4
    })
    .await;
    let probes = a.probes();
    let spacing = probes[3].0 - probes[1].0;
    assert!(
        spacing >= Duration::from_millis(500) && spacing < Duration::from_millis(1500),
        "two down_intervals took {spacing:?}"
    );
}

/// An `enable` of a drained backend that went sick while drained probes it at once, as README
/// promises, rather than leaving it out until its slot of the interval.
#[tokio::test]
async fn enabling_a_drained_backend_probes_it_at_once() {
    let a = CheckedBackend::start("a", 200, "ok").await;
    let b = CheckedBackend::start("b", 503, "down").await;
    let list = |state: &str| {
        format!(
            "[pools.\"/\"]\ninterval = \"1h\"\ndown_interval = \"1h\"\nbackends = [\"{}\", {{ addr = \"{}\", state = \"{state}\" }}]\n",
            a.addr, b.addr
        )
    };
    let lb = Lb::start(&list("drain"));
    eventually(WAIT, "b probed sick", || async { answered(&b, 503) == 1 }).await;
    b.set_health(200, "ok");
    let (ok, _, err) = support::lbctl(
        &lb,
        &[
            "--pattern=/",
            &format!("--ip={}", b.addr.ip()),
            &format!("--port={}", b.addr.port()),
            "enable",
        ],
    );
    assert!(ok, "enable: {err}");
    let client = support::client();
    eventually(WAIT, "b takes traffic", || async {
        get(&client, &lb.url("/")).await.1 == "b"
    })
    .await;
}
