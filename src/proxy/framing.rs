//! A read-side guard that follows HTTP/1.1 request framing on a client's byte stream just far
//! enough to see each request head whole, and spoils any head that carries both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! Why here and not in the handler: hyper accepts such a request the RFC 9112 §6.3 way (drops
//! `Content-Length`, reads the body as chunked, closes the connection afterwards), so by the time
//! the request reaches the service the evidence is gone. lb refuses them outright instead, as
//! HAProxy and the spec do. The guard turns the head's final line feed into a byte httparse
//! rejects, so hyper itself answers 400 and closes the connection, and nothing reaches a
//! backend.
//!
//! The guard only ever *withdraws*: on anything it does not understand (HTTP/2 preface, an
//! upgrade or CONNECT, obsolete line folding, a malformed length or chunk size, an oversized head)
//! it stops looking at the connection for good, and hyper's own parser stays the authority.

/// A head longer than this is hyper's to refuse (431); the guard stops following the stream.
const MAX_HEAD: usize = super::MAX_HEADER_BYTES + 1024;
/// Header lines are kept only this far: enough for the names and values the guard reads.
const LINE_KEEP: usize = 256;
/// What replaces the final line feed of a smuggling head: not a header-name byte, so httparse
/// fails with a parse error and hyper answers 400.
const SPOIL: u8 = 0;

#[derive(Debug)]
pub struct Framing {
    state: State,
    /// The current line, up to `LINE_KEEP` bytes.
    line: Vec<u8>,
    /// The current line was longer than `LINE_KEEP`.
    line_cut: bool,
    /// Bytes of the current head so far.
    head_len: usize,
    head: Head,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    /// Gave up; hyper alone decides.
    Off,
}

/// What the guard learnt of the head being read.
#[derive(Debug, Default)]
struct Head {
    request_line: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    upgrade: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            state: State::Head,
            line: Vec::with_capacity(64),
            line_cut: false,
            head_len: 0,
            head: Head::default(),
        }
    }
}

impl Framing {
    /// False once the guard has given up on this connection.
    pub fn is_on(&self) -> bool {
        self.state != State::Off
    }

    /// Follows freshly read bytes; may spoil the last byte of a smuggling head in place.
    pub fn scan(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Off => return,
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    let left = left - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), n) => State::Body(n),
                        (_, 0) => State::ChunkEnd,
                        (_, n) => State::ChunkData(n),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    // A line (or what has arrived of it) at a time, not a byte at a time: this
                    // runs on every byte a client sends.
                    let rest = &bytes[i..];
                    let newline = rest.iter().position(|&b| b == b'\n');
                    let text = newline.unwrap_or(rest.len());
                    if self.state == State::Head {
                        self.head_len += text + usize::from(newline.is_some());
                        if self.head_len > MAX_HEAD {
                            self.state = State::Off;
                            return;
                        }
                    }
                    let keep = text.min(LINE_KEEP.saturating_sub(self.line.len()));
                    self.line.extend_from_slice(&rest[..keep]);
                    self.line_cut |= keep < text;
                    let Some(newline) = newline else {
                        return;
                    };
                    let at = i + newline;
                    if self.end_of_line() {
                        bytes[at] = SPOIL;
                        self.state = State::Off;
                        return;
                    }
                    self.line.clear();
                    self.line_cut = false;
                    i = at + 1;
                }
            }
        }
    }

    /// Handles the line just ended; true when it completed a head that must be refused.
    fn end_of_line(&mut self) -> bool {
        // Taken out and put back so the line can be read while `self` changes; no allocation.
        let buffer = std::mem::take(&mut self.line);
        let spoil = self.line_ended(buffer.strip_suffix(b"\r").unwrap_or(&buffer));
        self.line = buffer;
        spoil
    }

    fn line_ended(&mut self, line: &[u8]) -> bool {
        match self.state {
            State::Head => return self.head_line(line),
            State::ChunkSize => {
                let n_digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let (digits, rest) = line.split_at(n_digits);
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d, 16).ok());
                let ok_rest = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
                self.state = match size {
                    _ if self.line_cut || !ok_rest => State::Off,
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                };
            }
            State::ChunkEnd => {
                self.state = if line.is_empty() {
                    State::ChunkSize
                } else {
                    State::Off
                };
            }
            State::Trailers => {
                if line.is_empty() {
                    self.next_head();
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Off => {}
        }
        false
    }

    fn head_line(&mut self, line: &[u8]) -> bool {
        let head = &mut self.head;
        if !head.request_line {
            if line.is_empty() {
                // Leading empty lines before a request line are tolerated by httparse.
                return false;
            }
            if line.starts_with(b"PRI * HTTP/2.0") || line.starts_with(b"CONNECT ") {
                self.state = State::Off;
            }
            head.request_line = true;
            return false;
        }
        if line.is_empty() {
            return self.end_of_head();
        }
        if matches!(line[0], b' ' | b'\t') {
            // Obsolete line folding: hyper refuses it; nothing to follow.
            self.state = State::Off;
            return false;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.state = State::Off;
            return false;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match length {
                Some(n) if !self.line_cut => head.content_length = Some(n),
                _ => self.state = State::Off,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.line_cut {
                self.state = State::Off;
                return false;
            }
            head.transfer_encoding = true;
            head.chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
        false
    }

    fn end_of_head(&mut self) -> bool {
        let head = std::mem::take(&mut self.head);
        if head.content_length.is_some() && head.transfer_encoding {
            return true;
        }
        self.state = if head.upgrade {
            // What follows may be a tunnel, not HTTP.
            State::Off
        } else if head.transfer_encoding {
            if head.chunked {
                State::ChunkSize
            } else {
                State::Off
            }
        } else {
            match head.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
        self.head_len = 0;
        false
    }

    fn next_head(&mut self) {
        self.state = State::Head;
        self.head = Head::default();
        self.head_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `step` bytes; returns the bytes as hyper would see them.
    fn feed(text: &str, step: usize) -> (Vec<u8>, Framing) {
        let mut framing = Framing::default();
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(step) {
            let mut piece = piece.to_vec();
            framing.scan(&mut piece);
            out.extend_from_slice(&piece);
        }
        (out, framing)
    }

    fn spoiled(text: &str) -> bool {
        (1..=text.len().min(7)).all(|step| feed(text, step).0 != text.as_bytes())
            && feed(text, text.len()).0 != text.as_bytes()
    }

    fn untouched(text: &str) -> bool {
        (1..=7).all(|step| feed(text, step).0 == text.as_bytes())
    }

    #[test]
    fn spoils_a_head_with_both_lengths_in_either_order() {
        assert!(spoiled(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(spoiled(
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
        ));
        assert!(spoiled(
            "POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"
        ));
    }

    #[test]
    fn follows_bodies_to_the_next_head() {
        let fixed = "POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n\
                     Content-Length: 1\r\nTransfer-Encoding: x\r\n";
        assert!(untouched(fixed));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
                       GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (out, framing) = feed(chunked, 3);
        assert_eq!(out, chunked.as_bytes());
        assert!(framing.is_on());
        let smuggled = format!(
            "{chunked}POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert!(spoiled(&smuggled));
    }

    #[test]
    fn withdraws_from_upgrades_and_http2() {
        let upgrade = "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
                       Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(untouched(upgrade));
        let (_, framing) = feed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4);
        assert!(!framing.is_on());
    }

    #[test]
    fn withdraws_from_oversized_lines_and_heads() {
        let long = "9".repeat(LINE_KEEP);
        for step in [1, 5, 4096] {
            let request = format!("POST / HTTP/1.1\r\nContent-Length: {long}\r\n\r\n");
            assert!(!feed(&request, step).1.is_on(), "step {step}");
        }
        let filler = format!("X-Fill: {}\r\n", "a".repeat(1000));
        let head = format!("GET / HTTP/1.1\r\n{}", filler.repeat(MAX_HEAD / 1000 + 2));
        assert!(!feed(&head, 4096).1.is_on());
        assert!(feed(&format!("GET / HTTP/1.1\r\n{filler}"), 7).1.is_on());
    }
}
