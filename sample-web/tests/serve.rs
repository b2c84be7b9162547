//! The sample-web binary answers as docs/contract.md says: `/healthz` answers `ok`, every other
//! path and method the greeting naming the node.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A sample-web child on 127.0.0.1:0, killed on drop.
struct SampleWeb {
    child: Child,
    addr: String,
}

impl SampleWeb {
    /// Starts `sample-web --port 0 --node NODE` and reads its address from its first stderr line
    /// (`sample-web: node NODE listening on IP:PORT`), printed once it is listening.
    fn start(node: &str) -> SampleWeb {
        SampleWeb::start_with(node, &[])
    }

    /// As `start`, with `extra` flags after the node.
    fn start_with(node: &str, extra: &[&str]) -> SampleWeb {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sample-web"))
            .args(["--port", "0", "--node", node])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sample-web");
        let mut line = String::new();
        BufReader::new(child.stderr.take().expect("piped stderr"))
            .read_line(&mut line)
            .expect("read sample-web's first line");
        let addr = line
            .trim()
            .strip_prefix(&format!("sample-web: node {node} listening on "))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        SampleWeb { child, addr }
    }

    /// One request on its own connection; the whole response as text.
    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }
}

impl Drop for SampleWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_path_and_method_is_greeted_with_the_node_name() {
    let web = SampleWeb::start("n1");
    for (method, path, body) in [
        ("GET", "/", ""),
        ("GET", "/missing", ""),
        ("GET", "/api/users/7?q=1", ""),
        ("POST", "/api/", "{\"a\":1}"),
        ("PUT", "/x", "data"),
        ("DELETE", "/x/y", ""),
        ("PATCH", "/", "p"),
        ("OPTIONS", "/anything", ""),
        ("GET", "/healthz/", ""),
    ] {
        let response = web.request(method, path, body);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{method} {path}: {response}"
        );
        assert!(
            response.ends_with("\r\n\r\nHello web from node n1\n"),
            "{method} {path}: {response}"
        );
    }
}

#[test]
fn healthz_answers_ok_and_head_has_no_body() {
    let web = SampleWeb::start("n2");
    for method in ["GET", "POST"] {
        let health = web.request(method, "/healthz", "");
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok"),
            "{method} /healthz: {health}"
        );
    }
    let head = web.request("HEAD", "/api/", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
}

#[test]
fn version_is_named_in_the_greeting() {
    let web = SampleWeb::start_with("n3", &["--version", "v2.1"]);
    let response = web.request("GET", "/", "");
    assert!(
        response.starts_with("HTTP/1.1 200")
            && response.ends_with("\r\n\r\nHello web from node n3 version v2.1\n"),
        "{response}"
    );
}

#[test]
fn error_rate_fails_that_share_of_greetings_and_spares_healthz() {
    let web = SampleWeb::start_with("n4", &["--error-rate", "0.2"]);
    for _ in 0..5 {
        let health = web.request("GET", "/healthz", "");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
    let failed = (0..50)
        .filter(|_| web.request("GET", "/", "").starts_with("HTTP/1.1 500"))
        .count();
    assert_eq!(failed, 10, "every fifth greeting answers 500");
}

#[test]
fn delay_adds_latency_to_greetings_only() {
    let web = SampleWeb::start_with("n5", &["--delay", "300ms"]);
    let started = std::time::Instant::now();
    let response = web.request("GET", "/", "");
    let greeting_took = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        greeting_took >= Duration::from_millis(300),
        "{greeting_took:?}"
    );
    let started = std::time::Instant::now();
    let health = web.request("GET", "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "healthz is spared the delay"
    );
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    for (flag, value, says) in [
        ("--error-rate", "1.5", "not a number from 0 to 1"),
        ("--delay", "soon", "a duration such as 200ms"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sample-web"))
            .args(["--port", "0", flag, value])
            .output()
            .expect("run sample-web");
        assert!(!output.status.success(), "{flag} {value} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}
