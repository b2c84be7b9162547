//! Health: the check rule (2xx and a trimmed body equal to a healthy value), rise and fall,
//! checkers spread over the interval, passive ejection that never empties a pool, and idle
//! backend connections closed on time and when their backend leaves the file.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use support::raw::{Wire, WAIT};
use support::{get, Lb};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[allow(clippy::disallowed_types)]
type Mutex<T> = std::sync::Mutex<T>;

/// A backend whose `/healthz` answer (status and body) the test sets, which records when each
/// probe arrived and counts its open connections that served a proxied request. A probe's
/// connection closes after the answer, so probes never count as open connections.
#[allow(dead_code)] // used by the tests that follow
struct CheckedBackend {
    addr: SocketAddr,
    health: Arc<Mutex<(u16, String)>>,
    probes: Arc<Mutex<Vec<Instant>>>,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

#[allow(dead_code)]
impl CheckedBackend {
    async fn start(name: &str, status: u16, body: &str) -> CheckedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Mutex::new((status, body.to_owned())));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let (shared_health, shared_probes, shared_open) =
            (Arc::clone(&health), Arc::clone(&probes), Arc::clone(&open));
        let name = name.to_owned();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (health, probes, open) = (
                    Arc::clone(&shared_health),
                    Arc::clone(&shared_probes),
                    Arc::clone(&shared_open),
                );
                let name = name.clone();
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream, None);
                    let mut counted = false;
                    while let Some((head, _body)) = wire.request().await {
                        if head.starts_with("GET /healthz ") {
                            probes.lock().unwrap().push(Instant::now());
                            let (status, body) = health.lock().unwrap().clone();
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
            accept,
        }
    }

    fn set_health(&self, status: u16, body: &str) {
        *self.health.lock().unwrap() = (status, body.to_owned());
    }

    fn probes(&self) -> Vec<Instant> {
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
