//! RFC 9113 §8.1.1: a malformed HTTP/2 request MUST NOT be forwarded. lb reads a request body
//! up to 64 KiB whole before it picks a backend, so a body that breaks its `content-length`, or
//! trailers that do not end the stream, are refused (RST_STREAM(PROTOCOL_ERROR)) with no byte of
//! the request at any backend, also when the frames arrive in separate writes. Raw frames, so the
//! timing and the malformation are exactly the test's.

mod support;

use std::time::Duration;

use support::raw::{RawBackend, Wire, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
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
async fn outcome(conn: &mut TcpStream, stream: u32) -> Result<Option<u32>, String> {
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
            GOAWAY => return Err("GOAWAY".into()),
            _ => {}
        }
    }
}

/// Sends `first`, waits so that lb sees it alone, then `rest`; the stream must be reset with
/// PROTOCOL_ERROR, the backend must never see it, and the connection serves the next stream.
async fn refused_across_writes(first: Vec<u8>, rest: Vec<u8>) {
    // A backend that answers as soon as it has a head, without reading a body: a request
    // forwarded early would be answered, and its answer relayed.
    let mut backend = RawBackend::handing_over(|_, mut wire: Wire| async move {
        let _ = wire
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    })
    .await;
    let lb = support::raw::start(&[backend.addr.to_string()]).await;
    let mut conn = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .unwrap()
        .unwrap();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend(frame(SETTINGS, 0, 0, &[]));
    preface.extend(first);
    conn.write_all(&preface).await.unwrap();
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

#[tokio::test]
async fn data_longer_than_content_length_is_never_forwarded() {
    refused_across_writes(
        request_headers(1, "/bad", &[("content-length", "1")], 0),
        frame(DATA, END_STREAM, 1, b"abcd"),
    )
    .await;
}

#[tokio::test]
async fn data_that_overruns_content_length_in_two_frames_is_never_forwarded() {
    let mut rest = frame(DATA, 0, 1, b"abcd");
    rest.extend(frame(DATA, END_STREAM, 1, b"efghi"));
    refused_across_writes(
        request_headers(1, "/bad", &[("content-length", "8")], 0),
        rest,
    )
    .await;
}

#[tokio::test]
async fn data_shorter_than_content_length_is_never_forwarded() {
    refused_across_writes(
        request_headers(1, "/bad", &[("content-length", "8")], 0),
        frame(DATA, END_STREAM, 1, b"abcd"),
    )
    .await;
}

#[tokio::test]
async fn trailers_without_end_stream_are_never_forwarded() {
    let mut rest = frame(DATA, 0, 1, b"abcd");
    rest.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &block(&[("x-checksum", "1")]),
    ));
    refused_across_writes(request_headers(1, "/bad", &[], 0), rest).await;
}
