//! chunked: owns finding where a `Transfer-Encoding: chunked` body ends (RFC 9112 §7.1) as its
//! bytes pass through; never changes or buffers a byte of it (`Chunked::scan_with` hands a
//! decoder the data's ranges).
//!
//! The scanner keeps only counters, so it allocates nothing, and it skips chunk data by
//! subtracting lengths, so its cost grows with the number of chunks, not of data bytes. Like
//! httparse and hyper, it takes a bare LF wherever the RFC asks for CRLF, and whitespace between
//! the chunk size and `;` or the line end. Chunk extensions and trailer fields are skipped
//! unread: relayed as is (`proxy::h1`) they reach the client unchanged, and judging them is the
//! client's business; decoded (`h1::backend::PlainBody`) they are dropped.

use std::fmt;

/// A chunk-size line (digits, whitespace and extensions, not its line end) longer than this is
/// refused, so a backend cannot keep the scanner in one line forever.
const MAX_SIZE_LINE: usize = 4096;
/// Sixteen hex digits hold any u64; refusing a seventeenth means the size can never overflow.
const MAX_SIZE_DIGITS: u8 = 16;
/// The trailer section (after the last-chunk line, up to and including the final empty line) may
/// be at most this long.
const MAX_TRAILERS: usize = 64 * 1024;

/// Follows a chunked body as it passes through, to find its end.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// The chunk size read so far. At most `MAX_SIZE_DIGITS` digits, so shifting never overflows.
    size: u64,
    /// Hex digits read on the current size line: an empty size is an error, not zero.
    n_digits: u8,
    /// Bytes of the current size line so far, bounded by `MAX_SIZE_LINE`.
    line_len: usize,
    /// Bytes of the trailer section so far, bounded by `MAX_TRAILERS`.
    trailer_len: usize,
}

/// What became of the bytes given to [`Chunked::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body ended: its last byte is the given count's last byte of the input (bytes[..n] are
    /// body, bytes[n..] are not).
    End(usize),
}

/// Why a chunked body is malformed. Once returned, the rest of the stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is empty, not hex, or longer than 16 digits.
    BadSize,
    /// A chunk-size line (with its extensions) over `MAX_SIZE_LINE` bytes.
    SizeTooLong,
    /// A line end expected (after chunk data, a size line's CR, the final empty line) is missing.
    BadLineEnd,
    /// A trailer section over `MAX_TRAILERS` bytes.
    TrailersTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line that is read a byte at a time.
    Line(Line),
    /// Inside chunk data, with this many bytes left (never zero).
    Data(u64),
    /// Inside a trailer field line, skipped in bulk up to its LF.
    TrailerField,
    /// The body has ended.
    Done,
    /// The body is malformed; kept so later calls see the same error.
    Failed(ChunkError),
}

/// The places where each byte matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the digits and some whitespace: only whitespace, `;` or the line end may follow.
    SizeSpace,
    /// Inside chunk extensions, skipped up to the line end.
    Extension,
    /// Saw the CR ending a size line; its LF must follow.
    SizeLf,
    /// Chunk data just ended; CRLF or LF must follow.
    DataCr,
    /// Saw the CR after chunk data; its LF must follow.
    DataLf,
    /// At the start of a trailer field or of the final empty line.
    TrailerStart,
    /// Saw the CR of the final empty line; its LF must follow.
    EndLf,
}

// === impl Chunked ===

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Line(Line::Size),
            size: 0,
            n_digits: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Follows the next bytes of the body. Calls after End or an error are a caller's bug but
    /// harmless (see the NOTE).
    ///
    /// # Errors
    ///
    /// A [`ChunkError`] when the body is malformed or over a limit; the stream cannot be framed
    /// past it.
    ///
    /// NOTE: after `End`, a call answers `End(0)` (no byte belongs to the body), and after an
    /// error, the same error again.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Scan, ChunkError> {
        self.scan_with(bytes, |_| {})
    }

    /// [`Chunked::scan`], also handing `on_data` the range of `bytes` each piece of chunk data
    /// takes, in order: what a decoder gives out.
    pub fn scan_with(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Scan, ChunkError> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Line(line) => {
                    let byte = bytes[at];
                    at += 1;
                    match self.step(line, byte) {
                        Ok(next) => self.state = next,
                        Err(error) => {
                            self.state = State::Failed(error);
                            return Err(error);
                        }
                    }
                }
                State::Data(left) => {
                    let available = bytes.len() - at;
                    match usize::try_from(left) {
                        Ok(left) if left <= available => {
                            on_data(at..at + left);
                            at += left;
                            self.state = State::Line(Line::DataCr);
                        }
                        // The chunk goes on past this input. usize -> u64 is lossless on every
                        // target Rust supports, and `available < left` here.
                        _ => {
                            on_data(at..bytes.len());
                            self.state = State::Data(left - available as u64);
                            return Ok(Scan::More);
                        }
                    }
                }
                State::TrailerField => {
                    let rest = &bytes[at..];
                    let (len, next) = match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => (lf + 1, State::Line(Line::TrailerStart)),
                        None => (rest.len(), State::TrailerField),
                    };
                    at += len;
                    self.state = next;
                    self.count_trailers(len)?;
                }
                State::Done => return Ok(Scan::End(at)),
                State::Failed(error) => return Err(error),
            }
        }
        match self.state {
            State::Done => Ok(Scan::End(at)),
            State::Failed(error) => Err(error),
            _ => Ok(Scan::More),
        }
    }

    /// True before the first byte and right after a complete chunk (between chunks): nothing of
    /// the body is half-parsed.
    #[cfg(test)]
    pub fn at_boundary(&self) -> bool {
        self.state == State::Line(Line::Size) && self.n_digits == 0 && self.line_len == 0
    }

    /// Reads one byte of a line; returns the state that follows it.
    fn step(&mut self, line: Line, byte: u8) -> Result<State, ChunkError> {
        match line {
            Line::Size => match hex_value(byte) {
                Some(digit) => {
                    if self.n_digits == MAX_SIZE_DIGITS {
                        return Err(ChunkError::BadSize);
                    }
                    self.n_digits += 1;
                    self.size = self.size << 4 | u64::from(digit);
                    self.count_size_line()?;
                    Ok(State::Line(Line::Size))
                }
                None if self.n_digits == 0 => Err(ChunkError::BadSize),
                None => self.after_size(byte),
            },
            Line::SizeSpace => self.after_size(byte),
            Line::Extension => match byte {
                b'\r' => Ok(State::Line(Line::SizeLf)),
                b'\n' => Ok(self.size_line_done()),
                _ => {
                    self.count_size_line()?;
                    Ok(State::Line(Line::Extension))
                }
            },
            Line::SizeLf => match byte {
                b'\n' => Ok(self.size_line_done()),
                _ => Err(ChunkError::BadLineEnd),
            },
            Line::DataCr => match byte {
                b'\r' => Ok(State::Line(Line::DataLf)),
                b'\n' => Ok(State::Line(Line::Size)),
                _ => Err(ChunkError::BadLineEnd),
            },
            Line::DataLf => match byte {
                b'\n' => Ok(State::Line(Line::Size)),
                _ => Err(ChunkError::BadLineEnd),
            },
            Line::TrailerStart => {
                self.count_trailers(1)?;
                Ok(match byte {
                    b'\r' => State::Line(Line::EndLf),
                    b'\n' => State::Done,
                    _ => State::TrailerField,
                })
            }
            Line::EndLf => {
                self.count_trailers(1)?;
                match byte {
                    b'\n' => Ok(State::Done),
                    _ => Err(ChunkError::BadLineEnd),
                }
            }
        }
    }

    /// Reads a byte after at least one size digit that is not itself a digit.
    fn after_size(&mut self, byte: u8) -> Result<State, ChunkError> {
        match byte {
            b' ' | b'\t' => {
                self.count_size_line()?;
                Ok(State::Line(Line::SizeSpace))
            }
            b';' => {
                self.count_size_line()?;
                Ok(State::Line(Line::Extension))
            }
            b'\r' => Ok(State::Line(Line::SizeLf)),
            b'\n' => Ok(self.size_line_done()),
            _ => Err(ChunkError::BadSize),
        }
    }

    /// Counts one byte of the size line against its limit.
    fn count_size_line(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkError::SizeTooLong);
        }
        Ok(())
    }

    /// Counts trailer bytes against their limit; on overflow, the scanner fails for good.
    fn count_trailers(&mut self, len: usize) -> Result<(), ChunkError> {
        self.trailer_len = self.trailer_len.saturating_add(len);
        if self.trailer_len > MAX_TRAILERS {
            self.state = State::Failed(ChunkError::TrailersTooLong);
            return Err(ChunkError::TrailersTooLong);
        }
        Ok(())
    }

    /// Ends a size line: its chunk's data follows, or the trailers after the last chunk.
    fn size_line_done(&mut self) -> State {
        let size = self.size;
        self.size = 0;
        self.n_digits = 0;
        self.line_len = 0;
        match size {
            0 => State::Line(Line::TrailerStart),
            n => State::Data(n),
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

// === impl ChunkError ===

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeTooLong => "chunk size line too long",
            ChunkError::BadLineEnd => "missing line end in chunked body",
            ChunkError::TrailersTooLong => "chunked trailer section too long",
        })
    }
}

impl std::error::Error for ChunkError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a whole input fared: `Ok(None)` when the body goes on past its end.
    type Outcome = Result<Option<usize>, ChunkError>;

    /// Feeds `pieces` one after the other; the end offset is relative to the whole input.
    fn feed<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut chunked = Chunked::new();
        let mut offset = 0;
        for piece in pieces {
            match chunked.scan(piece)? {
                Scan::More => offset += piece.len(),
                Scan::End(n) => {
                    assert!(n <= piece.len(), "End({n}) past a piece of {}", piece.len());
                    // Later calls are a caller bug, but must stay harmless.
                    assert_eq!(chunked.scan(b"0\r\n\r\n"), Ok(Scan::End(0)));
                    return Ok(Some(offset + n));
                }
            }
        }
        Ok(None)
    }

    /// Feeds `input` split every way the brief asks for and checks all ways agree.
    fn scan_all(input: &[u8]) -> Outcome {
        let whole = feed([input]);
        for step in [1, 2, 3, 7] {
            assert_eq!(feed(input.chunks(step)), whole, "pieces of {step}");
        }
        // Two pieces, split at every point; skipped for big inputs, which would take too long.
        if input.len() <= 4096 {
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                assert_eq!(feed([head, tail]), whole, "split at {split}");
            }
        }
        whole
    }

    /// A body that must end exactly at the end of `input`.
    fn ends(input: &[u8]) {
        assert_eq!(scan_all(input), Ok(Some(input.len())), "{:?}", show(input));
    }

    fn show(input: &[u8]) -> String {
        String::from_utf8_lossy(&input[..input.len().min(80)]).into_owned()
    }

    #[test]
    fn simple_body() {
        ends(b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn several_chunks() {
        ends(b"5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n");
        ends(b"1\r\n\n\r\n2\r\n\r\n\r\n0\r\n\r\n");
    }

    #[test]
    fn extensions() {
        ends(b"5;name=value\r\nhello\r\n0;last\r\n\r\n");
        ends(b"5;a=b;c=\"d;e\"\r\nhello\r\n0\r\n\r\n");
        ends(b"5 ; name = value\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn whitespace_after_size() {
        ends(b"5 \t \r\nhello\r\n0\t\r\n\r\n");
        ends(b"5 \nhello\n0 \n\n");
    }

    #[test]
    fn hex_digits_both_cases() {
        let mut input = b"1A\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 0x1a]);
        input.extend_from_slice(b"\r\na\r\n0123456789\r\nF\r\n0123456789abcde\r\n0\r\n\r\n");
        ends(&input);
    }

    #[test]
    fn trailers() {
        ends(b"5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum: 1234\r\n\r\n");
        ends(b"0\r\nX-Empty:\r\n\r\n");
    }

    #[test]
    fn bare_lf() {
        ends(b"5\nhello\n0\n\n");
        ends(b"5;ext\nhello\n0\nX-Sum: 1\n\n");
        // Mixed line ends, as a sloppy backend might send.
        ends(b"5\r\nhello\n0\nX-Sum: 1\r\n\n");
    }

    #[test]
    fn pipelined_bytes_after_end() {
        let body = b"5\r\nhello\r\n0\r\nX: y\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(scan_all(&input), Ok(Some(body.len())));
        let mut input = b"0\n\n".to_vec();
        input.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(scan_all(&input), Ok(Some(3)));
    }

    #[test]
    fn empty_body() {
        ends(b"0\r\n\r\n");
        ends(b"000\r\n\r\n");
    }

    #[test]
    fn unfinished_body_goes_on() {
        for input in [
            &b""[..],
            b"5",
            b"5\r\nhel",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\n",
            b"0\r\nX: y\r\n",
            b"0\r\n\r",
        ] {
            assert_eq!(scan_all(input), Ok(None), "{:?}", show(input));
        }
    }

    #[test]
    fn largest_size_is_a_number() {
        let input = b"ffffffffffffffff\r\nsome data, far from all of it";
        assert_eq!(scan_all(input), Ok(None));
        assert_eq!(scan_all(b"FFFFFFFFFFFFFFFF;x\r\n"), Ok(None));
        assert_eq!(scan_all(b"0000000000000000\r\n\r\n"), Ok(Some(20)));
    }

    #[test]
    fn seventeen_digits_is_bad_size() {
        assert_eq!(scan_all(b"10000000000000000\r\n"), Err(ChunkError::BadSize));
        // Digits are counted, not value: leading zeros are no loophole.
        assert_eq!(scan_all(b"00000000000000001\r\n"), Err(ChunkError::BadSize));
    }

    #[test]
    fn bad_size() {
        for input in [
            &b"\r\n"[..],
            b"\n",
            b";ext\r\n",
            b" 5\r\n",
            b"g\r\n",
            b"5g\r\n",
            b"-1\r\n",
            b"0x5\r\n",
            b"5 5\r\n",
            b"5 \t=\r\n",
            b"5\r\nhello\r\nz\r\n",
        ] {
            assert_eq!(
                scan_all(input),
                Err(ChunkError::BadSize),
                "{:?}",
                show(input)
            );
        }
    }

    #[test]
    fn size_line_limit() {
        // Exactly `MAX_SIZE_LINE` bytes before the line end is still fine.
        let mut input = b"5;".to_vec();
        input.resize(MAX_SIZE_LINE, b'a');
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        ends(&input);

        let mut input = b"5;".to_vec();
        input.resize(MAX_SIZE_LINE + 1, b'a');
        assert_eq!(scan_all(&input), Err(ChunkError::SizeTooLong));
        let mut input = b"5".to_vec();
        input.resize(MAX_SIZE_LINE + 1, b' ');
        assert_eq!(scan_all(&input), Err(ChunkError::SizeTooLong));
    }

    #[test]
    fn missing_line_end() {
        for input in [
            &b"5\r\nhelloX"[..],
            b"5\r\nhello\rX",
            b"5\r\nhello\r\r\n",
            b"5\r\nhello!\r\n0\r\n\r\n",
            b"5\rhello",
            b"5;ext\rX",
            b"0\r\n\rX",
            b"0\r\nX: y\r\n\r\r\n",
        ] {
            assert_eq!(
                scan_all(input),
                Err(ChunkError::BadLineEnd),
                "{:?}",
                show(input)
            );
        }
    }

    #[test]
    fn trailer_limit() {
        // One long field whose section, final empty line included, is exactly the limit.
        let mut input = b"0\r\nX-Big: ".to_vec();
        input.resize(3 + MAX_TRAILERS - 4, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        ends(&input);

        // One byte more, in a field or in the final line end, is too much.
        let mut input = b"0\r\nX-Big: ".to_vec();
        input.resize(3 + MAX_TRAILERS - 3, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(scan_all(&input), Err(ChunkError::TrailersTooLong));
        let mut input = b"0\r\nX-Big: ".to_vec();
        input.resize(3 + MAX_TRAILERS + 1, b'a');
        assert_eq!(scan_all(&input), Err(ChunkError::TrailersTooLong));

        // Many small fields add up the same way.
        let mut input = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS / 6 {
            input.extend_from_slice(b"X: y\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(scan_all(&input), Err(ChunkError::TrailersTooLong));
    }

    #[test]
    fn errors_stick() {
        let mut chunked = Chunked::new();
        assert_eq!(chunked.scan(b"zz"), Err(ChunkError::BadSize));
        assert_eq!(chunked.scan(b"0\r\n\r\n"), Err(ChunkError::BadSize));
        assert_eq!(chunked.scan(b""), Err(ChunkError::BadSize));
    }

    #[test]
    fn boundaries() {
        let mut chunked = Chunked::default();
        assert!(chunked.at_boundary());
        let mut seen = Vec::new();
        for &byte in b"2\r\nhi\r\n1;x\nX\n0\r\n\r\n" {
            chunked.scan(&[byte]).expect("valid body");
            seen.push(chunked.at_boundary());
        }
        let boundaries: Vec<usize> = (0..seen.len()).filter(|&i| seen[i]).collect();
        // After "2\r\nhi\r\n" (7 bytes) and "1;x\nX\n" (6 more); not inside the last chunk.
        assert_eq!(boundaries, [6, 12]);
    }

    #[test]
    fn big_chunk_is_skipped_not_walked() {
        // One scan per piece, however large the chunk: the data is subtracted, not read.
        let mut chunked = Chunked::new();
        assert_eq!(chunked.scan(b"ffffffff\r\n"), Ok(Scan::More));
        let data = vec![0u8; 1 << 20];
        for _ in 0..4095 {
            assert_eq!(chunked.scan(&data), Ok(Scan::More));
        }
        assert_eq!(chunked.scan(&data[..(1 << 20) - 1]), Ok(Scan::More));
        assert_eq!(chunked.scan(b"\r\n0\r\n\r\nnext"), Ok(Scan::End(7)));
    }

    #[test]
    fn errors_display_lowercase() {
        for error in [
            ChunkError::BadSize,
            ChunkError::SizeTooLong,
            ChunkError::BadLineEnd,
            ChunkError::TrailersTooLong,
        ] {
            let text = error.to_string();
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn scan_with_hands_out_the_data_in_any_split() {
        let body = b"5;x=y\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, body.len()] {
            let mut chunked = Chunked::new();
            let mut data = Vec::new();
            let mut end = None;
            let mut offset = 0;
            for piece in body.chunks(step) {
                let scanned = chunked.scan_with(piece, |r| data.extend_from_slice(&piece[r]));
                if let Ok(Scan::End(n)) = scanned {
                    end = Some(offset + n);
                    break;
                }
                offset += piece.len();
            }
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(end, Some(body.len() - 4), "step {step}");
        }
    }
}
