//! The HTTP/1.x conformance corpus (RFC 9110/9112), at both of lb's boundaries: raw client bytes
//! in, the exact requests a raw backend saw (or that it saw none) and the statuses and bodies the
//! client got, and whether lb closed the connection, out.
//!
//! Where the RFCs leave a choice, lb is at least as strict as the stricter of nginx and HAProxy:
//! a duplicate or empty `Host`, a repeated `Content-Length` and `Transfer-Encoding` in an HTTP/1.0
//! request are refused, as nginx refuses them. Every refusal closes the connection (nginx and
//! HAProxy close after 400 and 501 too), and a refused request never reaches a backend.
//!
//! The backend echoes the target it saw as the body, so a client reading an answer knows which
//! request it answers. After each case a sentinel request (on the same connection when lb keeps
//! it, else on a new one) marks the end of what the backend could have been sent.

mod support;

use std::time::Duration;

use support::raw::{header, headers_named, setup, start_with, RawBackend, Reply, Seen, Wire, WAIT};
use tokio::io::AsyncWriteExt;

// === the corpus runner ===

/// One answer the client reads: its status, and the body when the backend wrote it (the target
/// it saw), `None` for lb's own answers.
type Answer = (u16, Option<&'static str>);

/// One client-side case: what the client sends (in steps, each followed by the answers it reads
/// before the next step), the requests the backend sees, and whether lb closes the connection.
struct Case {
    steps: Vec<(Vec<u8>, Vec<Answer>)>,
    /// Each forwarded request as the backend reads it, head and body, without the framing
    /// fields and the `X-Forwarded-*` fields lb adds (checked from the head's own `Host`).
    forwarded: Vec<&'static str>,
    closed: bool,
}

/// A case of one step: `send`, then `answers`.
fn case(send: &[u8], answers: &[Answer], forwarded: &[&'static str], closed: bool) -> Case {
    Case {
        steps: vec![(send.to_vec(), answers.to_vec())],
        forwarded: forwarded.to_vec(),
        closed,
    }
}

/// A request lb must refuse with `status`, closing, with nothing forwarded.
fn refused(send: &[u8], status: u16) -> Case {
    case(send, &[(status, None)], &[], true)
}

/// A `GET /a` from `x.test` with `extra` header lines, which lb must refuse with 400.
fn bad_field(extra: &[u8]) -> Case {
    let mut send = b"GET /a HTTP/1.1\r\nHost: x.test\r\n".to_vec();
    send.extend_from_slice(extra);
    send.extend_from_slice(b"\r\n");
    refused(&send, 400)
}

/// A head as a comparable list: the request line as is, then each field as `name: value` with
/// the name lowercased, framing fields left out, sorted (field order is lb's to choose).
fn normalised(head: &str) -> Vec<String> {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let mut out = vec![lines.next().unwrap_or("").to_owned()];
    let mut fields: Vec<String> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            format!("{}: {}", name.to_ascii_lowercase(), value.trim())
        })
        .filter(|f| !f.starts_with("content-length:") && !f.starts_with("transfer-encoding:"))
        .collect();
    fields.sort();
    out.extend(fields);
    out
}

/// What the backend saw, as `expected` spells it: lb's `X-Forwarded-For` and `-Proto` are
/// checked and left out, and `X-Forwarded-Host` must equal `Host`.
fn as_expected(seen: &Seen) -> String {
    let head = &seen.head;
    assert_eq!(
        headers_named(head, "x-forwarded-for"),
        ["127.0.0.1"],
        "{head:?}"
    );
    assert_eq!(
        headers_named(head, "x-forwarded-proto"),
        ["http"],
        "{head:?}"
    );
    assert_eq!(
        headers_named(head, "x-forwarded-host"),
        headers_named(head, "host"),
        "{head:?}"
    );
    assert!(
        header(head, "content-length").is_none() || header(head, "transfer-encoding").is_none(),
        "both framings forwarded: {head:?}"
    );
    let fields: Vec<String> = normalised(head)
        .into_iter()
        .filter(|f| !f.starts_with("x-forwarded-"))
        .collect();
    format!(
        "{}\r\n\r\n{}",
        fields.join("\r\n"),
        String::from_utf8_lossy(&seen.body)
    )
}

/// Runs `case` against a fresh lb over an echoing raw backend.
async fn run(case: Case) {
    let (mut backend, lb) = setup(|seen| Reply::ok(seen.target())).await;
    let mut client = Wire::connect(&lb).await;
    for (send, answers) in &case.steps {
        client.send(send).await;
        for &(status, body) in answers {
            let response = client.response(false).await;
            assert_eq!(response.status, status, "{:?}", response.head);
            if let Some(body) = body {
                assert_eq!(response.text(), body, "{:?}", response.head);
            }
        }
    }
    let mut sentinel = if case.closed {
        client.expect_close().await;
        Wire::connect(&lb).await
    } else {
        client
    };
    let response = sentinel
        .exchange("GET /sentinel HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "/sentinel"),
        "the connection is still served after the case"
    );
    let mut forwarded = Vec::new();
    loop {
        let seen = backend.next().await;
        if seen.target() == "/sentinel" {
            break;
        }
        forwarded.push(as_expected(&seen));
    }
    let expected: Vec<String> = case
        .forwarded
        .iter()
        .map(|text| {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
            format!("{}\r\n\r\n{body}", normalised(head).join("\r\n"))
        })
        .collect();
    assert_eq!(forwarded, expected, "what the backend saw");
}

/// One test per case; `#[ignore]` marks the ones lb does not meet yet.
macro_rules! corpus {
    ($( $(#[$attr:meta])* $name:ident => $case:expr; )*) => {
        $( $(#[$attr])* #[tokio::test] async fn $name() { run($case).await } )*
    };
}

// === the client boundary ===

corpus! {
    a_plain_get_is_forwarded_as_is =>
        case(b"GET /a?q=1 HTTP/1.1\r\nHost: x.test\r\nX-A: 1\r\n\r\n", &[(200, Some("/a?q=1"))],
             &["GET /a?q=1 HTTP/1.1\r\nHost: x.test\r\nX-A: 1\r\n\r\n"], false);

    // Host (RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without exactly one
    // valid Host).
    host_missing_in_http_1_1 => refused(b"GET /a HTTP/1.1\r\n\r\n", 400);
    host_twice => refused(b"GET /a HTTP/1.1\r\nHost: x.test\r\nHost: y.test\r\n\r\n", 400);
    host_twice_with_one_value => refused(b"GET /a HTTP/1.1\r\nHost: x.test\r\nHost: x.test\r\n\r\n", 400);
    host_with_a_space => refused(b"GET /a HTTP/1.1\r\nHost: x .test\r\n\r\n", 400);
    host_with_userinfo => refused(b"GET /a HTTP/1.1\r\nHost: u@x.test\r\n\r\n", 400);
    host_with_a_quote => refused(b"GET /a HTTP/1.1\r\nHost: x\"y.test\r\n\r\n", 400);
    host_with_a_slash => refused(b"GET /a HTTP/1.1\r\nHost: x.test/b\r\n\r\n", 400);
    host_with_a_bad_port => refused(b"GET /a HTTP/1.1\r\nHost: x.test:8x\r\n\r\n", 400);
    host_empty => refused(b"GET /a HTTP/1.1\r\nHost: \r\n\r\n", 400);
    host_with_a_port => case(b"GET /a HTTP/1.1\r\nHost: x.test:8080\r\n\r\n", &[(200, Some("/a"))],
        &["GET /a HTTP/1.1\r\nHost: x.test:8080\r\n\r\n"], false);
    host_ipv6_literal => case(b"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &[(200, Some("/a"))],
        &["GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"], false);

    // Absolute-form targets (RFC 9112 3.2.2: the target's authority replaces Host).
    absolute_form_authority_replaces_host =>
        case(b"GET http://other.test/x?q=1 HTTP/1.1\r\nHost: x.test\r\n\r\n", &[(200, Some("/x?q=1"))],
             &["GET /x?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n"], false);
    absolute_form_with_userinfo =>
        refused(b"GET http://u@other.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n", 400);
    absolute_form_without_host => refused(b"GET http://other.test/x HTTP/1.1\r\n\r\n", 400);

    // Versions.
    http_1_2_is_served_as_1_1 =>
        case(b"GET /a HTTP/1.2\r\nHost: x.test\r\n\r\n", &[(200, Some("/a"))],
             &["GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n"], false);
    http_2_preface_after_an_exchange_is_refused => Case {
        steps: vec![
            (b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n".to_vec(), vec![(200, Some("/a"))]),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), vec![(400, None)]),
        ],
        forwarded: vec!["GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n"],
        closed: true,
    };
    http_2_preface_pipelined_after_a_request_is_refused =>
        case(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
             &[(200, Some("/a")), (400, None)], &["GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n"], true);

    // Transfer-Encoding (RFC 9112 6.1, 6.3).
    transfer_coding_gzip_then_chunked =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501);
    transfer_coding_on_two_lines =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501);
    transfer_coding_chunked_not_last =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400);
    transfer_coding_in_http_1_0 =>
        refused(b"POST /a HTTP/1.0\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400);
    content_length_and_transfer_encoding =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400);
    transfer_encoding_and_content_length =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400);
    a_chunked_body_is_forwarded_whole =>
        case(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
             &[(200, Some("/a"))], &["POST /a HTTP/1.1\r\nHost: x.test\r\n\r\nabcde"], false);

    // Chunked bodies: one rule for line ends, CRLF (RFC 9112 7.1). A bare LF in the chunk
    // framing is a malformed body: 400 and close, before any backend sees the request, so no
    // parser downstream can read the bytes after it differently.
    last_chunk_with_a_bare_lf_then_a_pipelined_request =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n", 400);
    trailer_with_a_bare_lf_then_a_pipelined_request =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n", 400);
    chunk_size_line_with_a_bare_lf =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400);
    chunk_extension_with_a_bare_lf =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nabc\r\n0\r\n\r\n", 400);
    malformed_chunk_size =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n\r\n", 400);
    chunk_data_without_its_crlf =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400);
    chunk_size_overflow =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10000000000000000\r\nx\r\n0\r\n\r\n", 400);

    // Content-Length (RFC 9112 6.3, RFC 9110 8.6).
    content_length_not_a_number => bad_field(b"Content-Length: 3x\r\n");
    content_length_negative => bad_field(b"Content-Length: -3\r\n");
    content_length_with_a_sign => bad_field(b"Content-Length: +3\r\n");
    content_length_too_large => bad_field(b"Content-Length: 99999999999999999999999\r\n");
    content_length_twice_differing => bad_field(b"Content-Length: 3\r\nContent-Length: 4\r\n");
    content_length_list_differing => bad_field(b"Content-Length: 3, 4\r\n");
    content_length_twice_equal =>
        refused(b"POST /a HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400);
    a_length_body_is_forwarded_whole =>
        case(b"POST /a HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\n\r\nabc", &[(200, Some("/a"))],
             &["POST /a HTTP/1.1\r\nHost: x.test\r\n\r\nabc"], false);

    // Field syntax (RFC 9112 5).
    whitespace_before_a_colon => bad_field(b"X-A : 1\r\n");
    whitespace_before_the_host_colon => refused(b"GET /a HTTP/1.1\r\nHost : x.test\r\n\r\n", 400);
    obs_fold => bad_field(b"X-A: 1\r\n 2\r\n");
    obs_fold_with_a_tab => bad_field(b"X-A: 1\r\n\t2\r\n");
    bare_cr_in_a_value => bad_field(b"X-A: 1\r2\r\n");
    nul_in_a_value => bad_field(b"X-A: 1\x002\r\n");
    space_in_a_name => bad_field(b"X A: 1\r\n");
    quote_in_a_name => bad_field(b"X\"A: 1\r\n");
    at_sign_in_a_name => bad_field(b"X@A: 1\r\n");
    non_ascii_in_a_name => bad_field(b"X\xffA: 1\r\n");
    empty_name => bad_field(b": 1\r\n");
    bare_cr_in_the_request_line => refused(b"GET /a\r HTTP/1.1\r\nHost: x.test\r\n\r\n", 400);
    nul_in_the_target => refused(b"GET /a\x00b HTTP/1.1\r\nHost: x.test\r\n\r\n", 400);
    head_over_64_kib => {
        let mut send = b"GET /a HTTP/1.1\r\nHost: x.test\r\n".to_vec();
        for i in 0..70 {
            send.extend_from_slice(format!("X-{i:02}: {}\r\n", "v".repeat(1000)).as_bytes());
        }
        send.extend_from_slice(b"\r\n");
        refused(&send, 431)
    };
    head_under_64_kib_is_forwarded => {
        let mut send = b"GET /a HTTP/1.1\r\nHost: x.test\r\n".to_vec();
        for i in 0..60 {
            send.extend_from_slice(format!("X-{i:02}: {}\r\n", "v".repeat(1000)).as_bytes());
        }
        send.extend_from_slice(b"\r\n");
        let forwarded: &'static str = String::from_utf8(send.clone()).unwrap().leak();
        case(&send, &[(200, Some("/a"))], &[forwarded], false)
    };
}

/// HTTP/1.0 lets a client leave `Host` out; lb forwards HTTP/1.1, which needs one, and names the
/// backend (as nginx's default `proxy_set_header Host $proxy_host` does).
#[tokio::test]
async fn http_1_0_without_host_is_forwarded_with_the_backend_as_host() {
    let (mut backend, lb) = setup(|seen| Reply::ok(seen.target())).await;
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange("GET /a HTTP/1.0\r\n\r\n").await;
    assert_eq!((response.status, response.text().as_str()), (200, "/a"));
    client.expect_close().await;
    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /a HTTP/1.1");
    assert_eq!(
        headers_named(&seen.head, "host"),
        [backend.addr.to_string()],
        "{:?}",
        seen.head
    );
}

/// A chunked request and a pipelined GET, written one byte at a time: every split of the head,
/// the chunk lines and the body is read the same as the whole.
#[tokio::test]
async fn a_request_split_at_every_byte() {
    const SEND: &[u8] = b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\nContent-Length: 2\r\n\r\nok";
    let (mut backend, lb) = setup(|seen| Reply::ok(seen.target())).await;
    let mut client = Wire::connect(&lb).await;
    client.stream.set_nodelay(true).unwrap();
    for byte in SEND {
        client.stream.write_all(&[*byte]).await.unwrap();
        // A pause so that each byte is a read of its own at lb.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for target in ["/a", "/b"] {
        let response = client.response(false).await;
        assert_eq!((response.status, response.text().as_str()), (200, target));
    }
    let a = backend.next().await;
    assert_eq!(
        (a.request_line(), a.body.as_slice()),
        ("POST /a HTTP/1.1", &b"abc"[..])
    );
    let b = backend.next().await;
    assert_eq!(
        (b.request_line(), b.body.as_slice()),
        ("GET /b HTTP/1.1", &b"ok"[..])
    );
}

/// Every split point of a request into two writes, each on a connection of its own.
#[tokio::test]
async fn a_request_split_in_two_at_every_byte() {
    const SEND: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let (mut backend, lb) = setup(|seen| Reply::ok(seen.target())).await;
    for at in 1..SEND.len() {
        let mut client = Wire::connect(&lb).await;
        client.stream.set_nodelay(true).unwrap();
        client.send(&SEND[..at]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        client.send(&SEND[at..]).await;
        let response = client.response(false).await;
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "/a"),
            "split at {at}"
        );
        let seen = backend.next().await;
        assert_eq!(seen.body, b"abc", "split at {at}");
    }
}

/// The absolute-form target's authority routes the request, not `Host` (RFC 9112 3.2.2).
#[tokio::test]
async fn absolute_form_authority_routes() {
    let mut other = RawBackend::start(|seen| Reply::ok(seen.target())).await;
    let mut plain = RawBackend::start(|seen| Reply::ok(seen.target())).await;
    let lb = start_with(
        &format!(
            "[pools.\"other.test/\"]\ninterval = \"1h\"\nbackends = [\"{}\"]\n",
            other.addr
        ),
        &[plain.addr.to_string()],
    )
    .await;
    lb.log_eventually(
        &format!("backend healthy pool=other.test/ backend={}", other.addr),
        WAIT,
    )
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET http://other.test/x HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "/x"));
    let seen = other.next().await;
    assert_eq!(headers_named(&seen.head, "host"), ["other.test"]);
    assert!(plain.taken_all().is_empty());
}

// === the backend boundary ===

/// A backend answering `GET /x` with `reply` and anything else (the sentinel) with 200: the client
/// gets `status`, and the backend saw `GET /x` exactly once (a malformed answer is not a failure
/// before an answer, so it is not retried to the same backend).
async fn backend_answers(reply: &'static [u8], status: u16) {
    let (mut backend, lb) = setup(move |seen| {
        if seen.target() == "/x" {
            Reply::raw(reply).closing()
        } else {
            Reply::ok(seen.target())
        }
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET /x HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!(response.status, status, "{:?}", response.head);
    let mut sentinel = Wire::connect(&lb).await;
    let response = sentinel
        .exchange("GET /sentinel HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200, "{:?}", response.head);
    let mut n_sent = 0;
    loop {
        let seen = backend.next().await;
        if seen.target() == "/sentinel" {
            break;
        }
        assert_eq!(seen.request_line(), "GET /x HTTP/1.1");
        n_sent += 1;
    }
    assert_eq!(n_sent, 1, "times the backend got the request");
}

macro_rules! backend_corpus {
    ($( $(#[$attr:meta])* $name:ident => $reply:expr, $status:expr; )*) => {
        $( $(#[$attr])* #[tokio::test] async fn $name() { backend_answers($reply, $status).await } )*
    };
}

backend_corpus! {
    response_well_formed => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200;
    response_with_two_differing_lengths =>
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", 502;
    response_with_a_differing_length_list => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", 502;
    response_with_length_and_chunked =>
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 502;
    response_with_obs_fold => b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok", 502;
    response_with_nul => b"HTTP/1.1 200 OK\r\nX-A: 1\x002\r\nContent-Length: 2\r\n\r\nok", 502;
    response_with_bare_cr => b"HTTP/1.1 200 OK\r\nX-A: 1\r2\r\nContent-Length: 2\r\n\r\nok", 502;
    response_with_a_four_digit_status => b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", 502;
    response_with_a_two_digit_status => b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", 502;
    response_with_a_status_not_a_number => b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok", 502;
    response_not_http => b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 502;
}

/// RFC 9110 15.2: a proxy MUST forward 1xx responses to an HTTP/1.1 client (and must not send
/// them to an HTTP/1.0 one).
#[tokio::test]
async fn interim_responses_reach_an_http_1_1_client() {
    let (_backend, lb) = setup(|_| {
        Reply::raw(
            &b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert_eq!(response.interim.len(), 1, "{:?}", response.interim);
    assert!(response.interim[0].starts_with("HTTP/1.1 103 "));
    assert_eq!(
        headers_named(&response.interim[0], "link"),
        ["</s.css>; rel=preload"]
    );
}

#[tokio::test]
async fn interim_responses_do_not_reach_an_http_1_0_client() {
    let (_backend, lb) = setup(|_| {
        Reply::raw(
            &b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET /a HTTP/1.0\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert!(response.interim.is_empty(), "{:?}", response.interim);
}

/// RFC 9110 6.5.1: framing fields are not allowed in trailers; lb drops them and keeps the rest.
#[tokio::test]
async fn framing_fields_in_response_trailers_are_dropped() {
    let (_backend, lb) = setup(|_| {
        Reply::raw(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\nTransfer-Encoding: gzip\r\nHost: y.test\r\n\r\n"[..],
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET /a HTTP/1.1\r\nHost: x.test\r\nTE: trailers\r\n\r\n")
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    let trailers: Vec<String> = response
        .trailers
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    assert_eq!(trailers, ["x-sum: 1"]);
}

/// A response trailer that is not a valid field: the body was already sent, so lb ends the
/// connection rather than relay it.
#[tokio::test]
async fn a_malformed_response_trailer_is_not_relayed() {
    let (_backend, lb) = setup(|_| {
        Reply::raw(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\x002\r\n\r\n"[..],
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /a HTTP/1.1\r\nHost: x.test\r\nTE: trailers\r\n\r\n")
        .await;
    let all = client.until_close().await;
    assert!(
        support::raw::find(&all, b"\x00").is_none(),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
}
