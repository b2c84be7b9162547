//! RFC 9113 §8.1.1: a malformed HTTP/2 request MUST NOT be forwarded. lb reads a request body
//! up to 64 KiB whole before it picks a backend, so a body that breaks its `content-length`, or
//! trailers that do not end the stream, are refused (RST_STREAM(PROTOCOL_ERROR)) with no byte of
//! the request at any backend, also when the frames arrive in separate writes, on h2c and over
//! TLS. A larger body streams; one whose length turns out wrong resets the stream, and the
//! backend's connection is closed mid-request, never answered on. Raw frames, so the timing
//! and the malformation are exactly the test's.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use support::certs::Ca;
use support::raw::{RawBackend, Wire, WAIT};
use support::Lb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const SETTINGS_ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literals without indexing, no Huffman: needs no HPACK encoder.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn request_headers(stream: u32, path: &str, extra: &[(&str, &str)], flags: u8) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "example.com"),
    ];
    fields.extend_from_slice(extra);
    frame(HEADERS, END_HEADERS | flags, stream, &block(&fields))
}

/// Reads frames until one of `stream`'s ends it (RST_STREAM: its code; HEADERS: `None`) or the
/// connection goes away.
async fn outcome<S: AsyncRead + Unpin>(conn: &mut S, stream: u32) -> Result<Option<u32>, String> {
    loop {
        let mut head = [0u8; 9];
        timeout(WAIT, conn.read_exact(&mut head))
            .await
            .map_err(|_| "no frame in time".to_string())?
            .map_err(|e| format!("connection ended: {e}"))?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        timeout(WAIT, conn.read_exact(&mut payload))
            .await
            .map_err(|_| "no payload in time".to_string())?
            .map_err(|e| format!("connection ended: {e}"))?;
        match head[3] {
            RST_STREAM if id == stream => {
                return Ok(Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ])))
            }
            HEADERS if id == stream => return Ok(None),
            GOAWAY => return Err(format!("GOAWAY {payload:?}")),
            _ => {}
        }
    }
}

/// How the test reaches lb: cleartext HTTP/2 with prior knowledge, or TLS with ALPN `h2`.
#[derive(Clone, Copy)]
enum Transport {
    H2c,
    Tls,
}

/// Either transport's byte stream.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// lb with one pool to `backend` (healthy), and a connection to it on `transport` with the
/// HTTP/2 preface and an empty SETTINGS frame already written.
async fn connect(backend: SocketAddr, transport: Transport) -> (Lb, Box<dyn Conn>) {
    let pool = format!("[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{backend}\"]\n");
    let (lb, mut conn): (Lb, Box<dyn Conn>) = match transport {
        Transport::H2c => {
            let lb = Lb::start(&pool);
            let tcp = timeout(WAIT, TcpStream::connect(lb.http))
                .await
                .unwrap()
                .unwrap();
            (lb, Box::new(tcp))
        }
        Transport::Tls => {
            let ca = Ca::new("test CA");
            let leaf = ca.server(&["lb.test"]);
            let dir = tempfile::tempdir().expect("temp dir");
            leaf.write(dir.path(), "lb");
            let config = dir.path().join("lb.toml");
            let text = format!(
                "[listen]\nhttps = \"127.0.0.1:0\"\n\n\
                 [[tls.certificates]]\ncert = \"lb.pem\"\nkey = \"lb.key\"\ndefault = true\n\n{pool}"
            );
            std::fs::write(&config, text).expect("write config");
            let lb = Lb::start_at(dir, config, &[]);
            let line = lb.log_eventually("listener=\"https\"", WAIT).await;
            let start = line.find("addr=").expect("addr") + "addr=".len();
            let addr: SocketAddr = line[start..]
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("https listener address");
            let mut roots = RootCertStore::empty();
            roots.add(ca.der.clone()).expect("trust the CA");
            let mut client = ClientConfig::builder_with_provider(support::certs::provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::try_from("lb.test").expect("name");
            let tcp = timeout(WAIT, TcpStream::connect(addr))
                .await
                .unwrap()
                .unwrap();
            let tls = timeout(
                WAIT,
                TlsConnector::from(Arc::new(client)).connect(name, tcp),
            )
            .await
            .expect("handshake in time")
            .expect("handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            (lb, Box::new(tls))
        }
    };
    lb.log_eventually(&format!("backend healthy pool=/ backend={backend}"), WAIT)
        .await;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(frame(SETTINGS, 0, 0, &[]));
    conn.write_all(&preface).await.unwrap();
    (lb, conn)
}

/// Sends `first`, waits so that lb sees it alone, then `rest`; the stream must be reset with
/// PROTOCOL_ERROR, the backend must never see it, and the connection serves the next stream.
async fn refused_across_writes(transport: Transport, first: Vec<u8>, rest: Vec<u8>) {
    // A backend that answers as soon as it has a head, without reading a body: a request
    // forwarded early would be answered, and its answer relayed.
    let mut backend = RawBackend::handing_over(|_, mut wire: Wire| async move {
        let _ = wire
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    })
    .await;
    let (_lb, mut conn) = connect(backend.addr, transport).await;
    conn.write_all(&first).await.unwrap();
    // Not synchronisation: the gap between the writes is the condition under test.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(&rest).await.unwrap();
    assert_eq!(
        outcome(&mut conn, 1).await,
        Ok(Some(PROTOCOL_ERROR)),
        "the malformed stream is reset, not answered"
    );

    // A good request after it on the same connection: it is the first the backend sees.
    let good = request_headers(3, "/good", &[], END_STREAM);
    conn.write_all(&good).await.unwrap();
    assert_eq!(
        outcome(&mut conn, 3).await,
        Ok(None),
        "the next stream is answered"
    );
    loop {
        let seen = backend.next().await;
        let line = seen.head.lines().next().unwrap_or_default().to_string();
        assert!(
            !line.contains("/bad"),
            "the backend saw the malformed request: {line}"
        );
        if line.contains("/good") {
            break;
        }
    }
}

async fn data_longer_than_content_length_is_never_forwarded(transport: Transport) {
    refused_across_writes(
        transport,
        request_headers(1, "/bad", &[("content-length", "1")], 0),
        frame(DATA, END_STREAM, 1, b"abcd"),
    )
    .await;
}

#[tokio::test]
async fn data_longer_than_content_length_is_never_forwarded_on_h2c() {
    data_longer_than_content_length_is_never_forwarded(Transport::H2c).await;
}

#[tokio::test]
async fn data_longer_than_content_length_is_never_forwarded_over_tls() {
    data_longer_than_content_length_is_never_forwarded(Transport::Tls).await;
}

async fn data_that_overruns_content_length_in_two_frames_is_never_forwarded(transport: Transport) {
    let mut rest = frame(DATA, 0, 1, b"abcd");
    rest.extend(frame(DATA, END_STREAM, 1, b"efghi"));
    refused_across_writes(
        transport,
        request_headers(1, "/bad", &[("content-length", "8")], 0),
        rest,
    )
    .await;
}

#[tokio::test]
async fn data_that_overruns_content_length_in_two_frames_is_never_forwarded_on_h2c() {
    data_that_overruns_content_length_in_two_frames_is_never_forwarded(Transport::H2c).await;
}

#[tokio::test]
async fn data_that_overruns_content_length_in_two_frames_is_never_forwarded_over_tls() {
    data_that_overruns_content_length_in_two_frames_is_never_forwarded(Transport::Tls).await;
}

async fn data_shorter_than_content_length_is_never_forwarded(transport: Transport) {
    refused_across_writes(
        transport,
        request_headers(1, "/bad", &[("content-length", "8")], 0),
        frame(DATA, END_STREAM, 1, b"abcd"),
    )
    .await;
}

#[tokio::test]
async fn data_shorter_than_content_length_is_never_forwarded_on_h2c() {
    data_shorter_than_content_length_is_never_forwarded(Transport::H2c).await;
}

#[tokio::test]
async fn data_shorter_than_content_length_is_never_forwarded_over_tls() {
    data_shorter_than_content_length_is_never_forwarded(Transport::Tls).await;
}

async fn trailers_without_end_stream_are_never_forwarded(transport: Transport) {
    let mut rest = frame(DATA, 0, 1, b"abcd");
    rest.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &block(&[("x-checksum", "1")]),
    ));
    refused_across_writes(transport, request_headers(1, "/bad", &[], 0), rest).await;
}

#[tokio::test]
async fn trailers_without_end_stream_are_never_forwarded_on_h2c() {
    trailers_without_end_stream_are_never_forwarded(Transport::H2c).await;
}

#[tokio::test]
async fn trailers_without_end_stream_are_never_forwarded_over_tls() {
    trailers_without_end_stream_are_never_forwarded(Transport::Tls).await;
}

/// Acknowledges lb's SETTINGS and reads frames until lb's WINDOW_UPDATE for the connection:
/// past both, the client may send more than the spec's initial 64 KiB windows (lb's larger
/// stream window applies once acknowledged).
async fn connection_window_opened<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S) {
    let (mut acknowledged, mut opened) = (false, false);
    while !(acknowledged && opened) {
        let mut head = [0u8; 9];
        timeout(WAIT, conn.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .expect("a frame");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        timeout(WAIT, conn.read_exact(&mut payload))
            .await
            .expect("a payload in time")
            .expect("a payload");
        if head[3] == SETTINGS && head[4] & SETTINGS_ACK == 0 {
            conn.write_all(&frame(SETTINGS, SETTINGS_ACK, 0, &[]))
                .await
                .unwrap();
            acknowledged = true;
        }
        opened |= head[3] == WINDOW_UPDATE && head[5..9] == [0, 0, 0, 0];
    }
}

/// A body announced as larger than lb holds streams to the backend as it comes; `tail` (sent
/// after a gap) makes it break its `content-length`. The stream must be reset, and the
/// backend's connection closed before the body it was promised is complete: no answer of the
/// backend's is relayed and the connection is not used again.
async fn streamed_body_of_the_wrong_length_is_aborted(
    transport: Transport,
    length: usize,
    first: usize,
    tail: usize,
) {
    let (got, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = RawBackend::handing_over(move |seen, mut wire: Wire| {
        let got = got.clone();
        async move {
            if !seen.head.contains("/bad") {
                return;
            }
            // Reads the promised body; answers only if it all came.
            while wire.buf.len() < length && wire.fill().await {}
            let whole = wire.buf.len() >= length;
            if whole {
                let _ = wire
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
            let _ = got.send((whole, wire.buf.len()));
        }
    })
    .await;
    let (_lb, mut conn) = connect(backend.addr, transport).await;
    connection_window_opened(&mut conn).await;
    let length_text = length.to_string();
    let mut start = request_headers(1, "/bad", &[("content-length", &length_text)], 0);
    let chunk = vec![b'x'; 16 * 1024];
    let mut left = first;
    while left > 0 {
        let n = left.min(chunk.len());
        start.extend(frame(DATA, 0, 1, &chunk[..n]));
        left -= n;
    }
    conn.write_all(&start).await.unwrap();
    // Not synchronisation: the gap lets lb stream the first part before the tail shows the
    // length is wrong.
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(&frame(DATA, END_STREAM, 1, &vec![b'y'; tail]))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut conn, 1).await,
        Ok(Some(PROTOCOL_ERROR)),
        "the stream is reset, never answered"
    );
    let (whole, received) = timeout(WAIT, got_rx.recv())
        .await
        .expect("the backend's connection ends in time")
        .expect("the backend saw the request");
    assert!(
        !whole && received < length,
        "the backend got {received} of {length} bytes then the connection closed"
    );
}

#[tokio::test]
async fn streamed_body_shorter_than_content_length_is_aborted_on_h2c() {
    streamed_body_of_the_wrong_length_is_aborted(Transport::H2c, 100_000, 4 * 16 * 1024, 10).await;
}

#[tokio::test]
async fn streamed_body_shorter_than_content_length_is_aborted_over_tls() {
    streamed_body_of_the_wrong_length_is_aborted(Transport::Tls, 100_000, 4 * 16 * 1024, 10).await;
}

#[tokio::test]
async fn streamed_body_longer_than_content_length_is_aborted_on_h2c() {
    streamed_body_of_the_wrong_length_is_aborted(Transport::H2c, 70_000, 4 * 16 * 1024, 4_484)
        .await;
}

#[tokio::test]
async fn streamed_body_longer_than_content_length_is_aborted_over_tls() {
    streamed_body_of_the_wrong_length_is_aborted(Transport::Tls, 70_000, 4 * 16 * 1024, 4_484)
        .await;
}
