//! chunked: owns the chunked transfer coding (RFC 9112 §7.1) on both sides of lb: decoding a
//! client's or a backend's chunked body, strictly, and writing it out again in lb's own framing
//! ([`Output::Chunked`]: the same chunk sizes, no extensions, trailer fields checked) or as plain
//! data ([`Output::Data`]: for a client that cannot take chunked, or for hyper's HTTP/2 side).
//! No byte of the sender's framing reaches the other side, so two parsers never have to agree.
//! [`Output::Check`] writes nothing and says whether the sender's framing is already byte for
//! byte what [`Output::Chunked`] would write: then the caller may send the bytes it holds as they
//! are, which is the same thing without the copy.
//!
//! Delegated to httparse: chunk-size lines (`httparse::parse_chunk_size`) and trailer fields
//! (`httparse::parse_headers`). Checked here first, because httparse is lenient there: every line
//! of the framing (size lines, the line end after chunk data, trailer fields, the final empty
//! line) ends in CRLF; a bare LF or CR, or a control byte in a size line, is malformed.
//!
//! It never does I/O and never allocates: bytes it cannot use yet (a size line or trailer
//! section cut by a read) stay with the caller, who passes them again with more behind them.

use std::fmt;

/// A chunk-size line (digits and extensions, line end included) longer than this is refused.
const MAX_SIZE_LINE: usize = 4096;
/// The trailer section (after the last-chunk line, through the final empty line) may be at most
/// this long.
const MAX_TRAILERS: usize = 64 * 1024;
/// Trailer fields read at most.
const MAX_TRAILER_FIELDS: usize = 32;

/// What the decoder writes for the body it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Chunked again, in lb's own framing.
    Chunked,
    /// The data alone; trailers are dropped.
    Data,
    /// Nothing: the body is only checked, and [`Decoder::verbatim`] tells whether `Chunked`
    /// would have written exactly the bytes consumed.
    Check,
}

/// Why a chunked body is malformed. Once returned, the rest of the stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is empty, not hex, over 16 digits, or followed by a control byte.
    BadSize,
    /// A chunk-size line (with its extensions) over `MAX_SIZE_LINE` bytes.
    SizeTooLong,
    /// A line end that is not CRLF, or missing after chunk data.
    BadLineEnd,
    /// A trailer field httparse refuses, or too many of them.
    BadTrailer,
    /// A trailer section over `MAX_TRAILERS` bytes.
    TrailersTooLong,
}

/// How far one [`Decoder::decode`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the rest must be given again (with more after them), or, once
    /// the body `ended`, belong to what follows it.
    pub consumed: usize,
    pub ended: bool,
}

/// Follows one chunked body and writes it out again; see the module docs.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    output: Output,
    /// Every byte consumed so far is what `Output::Chunked` writes for it.
    verbatim: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes left (never zero).
    Data(u64),
    /// At the CRLF that ends chunk data.
    DataEnd,
    /// After the last-chunk line: trailer fields, then the final empty line. The section stays
    /// unconsumed until it is whole, so it is at the start of the next input: `line_start` (the
    /// current line's) and `checked` (bytes looked at) carry over, and a section dribbled in is
    /// read once.
    Trailers {
        line_start: usize,
        checked: usize,
    },
    Done,
    Failed(ChunkError),
}

impl Decoder {
    pub fn new(output: Output) -> Decoder {
        Decoder {
            state: State::Size,
            output,
            verbatim: true,
        }
    }

    /// The bytes consumed so far are exactly what [`Output::Chunked`] writes for them: sizes in
    /// lowercase hex without leading zeros or extensions, and no trailer field.
    pub fn verbatim(&self) -> bool {
        self.verbatim
    }

    /// Reads what it can of `input`, appending the body as [`Output`] says to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ChunkError> {
        let mut at = 0;
        let ended = loop {
            let rest = &input[at..];
            match self.state {
                State::Done => break true,
                State::Failed(error) => return Err(error),
                _ if rest.is_empty() => break false,
                State::Size => match size_line(rest) {
                    Ok(Some((len, size))) => {
                        self.verbatim &= is_canonical_size_line(&rest[..len], size);
                        at += len;
                        self.state = if size == 0 {
                            State::Trailers {
                                line_start: 0,
                                checked: 0,
                            }
                        } else {
                            if self.output == Output::Chunked {
                                push_size(out, size);
                            }
                            State::Data(size)
                        };
                    }
                    Ok(None) if rest.len() >= MAX_SIZE_LINE => {
                        return self.fail(ChunkError::SizeTooLong)
                    }
                    Ok(None) => break false,
                    Err(error) => return self.fail(error),
                },
                State::Data(left) => {
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if self.output != Output::Check {
                        out.extend_from_slice(&rest[..take]);
                    }
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest[0] != b'\r' || rest.get(1).is_some_and(|&b| b != b'\n') {
                        return self.fail(ChunkError::BadLineEnd);
                    }
                    if rest.len() < 2 {
                        break false;
                    }
                    at += 2;
                    if self.output == Output::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.state = State::Size;
                }
                State::Trailers {
                    line_start,
                    checked,
                } => match trailer_section(rest, line_start, checked) {
                    Ok(Section::Whole(len)) => {
                        // Only the final empty line: no trailer field.
                        self.verbatim &= len == 2;
                        if self.output == Output::Chunked {
                            out.extend_from_slice(b"0\r\n");
                            push_trailers(out, &rest[..len]);
                            out.extend_from_slice(b"\r\n");
                        }
                        at += len;
                        self.state = State::Done;
                    }
                    Ok(Section::Partial { .. }) if rest.len() > MAX_TRAILERS => {
                        return self.fail(ChunkError::TrailersTooLong)
                    }
                    Ok(Section::Partial {
                        line_start,
                        checked,
                    }) => {
                        self.state = State::Trailers {
                            line_start,
                            checked,
                        };
                        break false;
                    }
                    Err(error) => return self.fail(error),
                },
            }
        };
        Ok(Decoded {
            consumed: at,
            ended,
        })
    }

    fn fail(&mut self, error: ChunkError) -> Result<Decoded, ChunkError> {
        self.state = State::Failed(error);
        Err(error)
    }
}

/// Reads a chunk-size line at the start of `input`: its length (line end included) and the
/// size; `None` while its line end has not arrived.
fn size_line(input: &[u8]) -> Result<Option<(usize, u64)>, ChunkError> {
    if !input[0].is_ascii_hexdigit() {
        return Err(ChunkError::BadSize);
    }
    let Some(end) = line_end(input)? else {
        return Ok(None);
    };
    // httparse takes any byte in an extension; a size line holds visible ASCII and blanks only.
    if !input[..end - 1]
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7F).contains(&b))
    {
        return Err(ChunkError::BadSize);
    }
    match httparse::parse_chunk_size(&input[..=end]) {
        Ok(httparse::Status::Complete((len, size))) if len == end + 1 => Ok(Some((len, size))),
        _ => Err(ChunkError::BadSize),
    }
}

/// A size line exactly as [`push_size`] writes `size`: lowercase hex digits, no leading zero,
/// no extension, CRLF.
fn is_canonical_size_line(line: &[u8], size: u64) -> bool {
    // The line parsed as `size`: if it holds no more than the fewest hex digits `size` needs
    // (and its CRLF), it has no leading zero and no extension.
    let digits = (64 - size.leading_zeros()).div_ceil(4).max(1) as usize;
    line.len() == digits + 2 && !line.iter().any(u8::is_ascii_uppercase)
}

/// Where the first line of `input` ends (the LF's index), if it has ended; a bare LF or a CR not
/// followed by LF is malformed.
fn line_end(input: &[u8]) -> Result<Option<usize>, ChunkError> {
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'\n' if i > 0 && input[i - 1] == b'\r' => return Ok(Some(i)),
            b'\n' => return Err(ChunkError::BadLineEnd),
            b'\r' if input.get(i + 1).is_some_and(|&next| next != b'\n') => {
                return Err(ChunkError::BadLineEnd)
            }
            _ => {}
        }
    }
    Ok(None)
}

/// How much of a trailer section has arrived.
enum Section {
    /// The section is whole and valid, this long (through its final empty line).
    Whole(usize),
    /// More is to come; where the current line starts and how far the bytes were checked.
    Partial { line_start: usize, checked: usize },
}

/// Reads the trailer section at the start of `input`, from where an earlier call stopped.
fn trailer_section(
    input: &[u8],
    mut line_start: usize,
    mut at: usize,
) -> Result<Section, ChunkError> {
    while let Some(&byte) = input.get(at) {
        match byte {
            b'\n' if at > line_start && input[at - 1] == b'\r' => {
                if at - line_start == 1 {
                    // The empty line: the section is whole.
                    let len = at + 1;
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    return match httparse::parse_headers(&input[..len], &mut fields) {
                        Ok(httparse::Status::Complete((parsed, _))) if parsed == len => {
                            Ok(Section::Whole(len))
                        }
                        _ => Err(ChunkError::BadTrailer),
                    };
                }
                line_start = at + 1;
            }
            b'\n' => return Err(ChunkError::BadLineEnd),
            b'\r' => match input.get(at + 1) {
                Some(b'\n') => {}
                Some(_) => return Err(ChunkError::BadLineEnd),
                // Its LF is still to come: looked at again then.
                None => break,
            },
            _ => {}
        }
        at += 1;
    }
    Ok(Section::Partial {
        line_start,
        checked: at,
    })
}

/// Writes the trailer fields of a valid `section` that may go on: not the framing fields, not
/// hop-by-hop ones, not `Host` (RFC 9110 §6.5.1).
fn push_trailers(out: &mut Vec<u8>, section: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    if let Ok(httparse::Status::Complete((_, fields))) =
        httparse::parse_headers(section, &mut fields)
    {
        for field in fields.iter() {
            let name = field.name.as_bytes();
            let dropped = super::super::headers::is_hop_by_hop_name(name)
                || name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"host");
            if !dropped {
                super::wire::push_field(out, name, field.value);
            }
        }
    }
}

/// Appends a chunk-size line for `size` bytes of data.
fn push_size(out: &mut Vec<u8>, size: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{size:x}\r\n");
}

/// Appends `data` as one chunk (close-delimited bodies re-framed for an HTTP/1.1 peer).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        push_size(out, data.len() as u64);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

// === impl ChunkError ===

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeTooLong => "chunk size line too long",
            ChunkError::BadLineEnd => "line end in chunked body is not CRLF",
            ChunkError::BadTrailer => "invalid trailer field",
            ChunkError::TrailersTooLong => "chunked trailer section too long",
        })
    }
}

impl std::error::Error for ChunkError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, keeping what was not consumed as a caller does:
    /// the output and where the body ended.
    fn feed(
        input: &[u8],
        step: usize,
        output: Output,
    ) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut decoder = Decoder::new(output);
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            let decoded = decoder.decode(&pending, &mut out)?;
            offset += decoded.consumed;
            pending.drain(..decoded.consumed);
            if decoded.ended {
                return Ok((out, Some(offset)));
            }
        }
        Ok((out, None))
    }

    /// Every way of splitting `input` gives the same result.
    fn all(input: &[u8], output: Output) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let whole = feed(input, input.len(), output);
        for step in [1, 2, 3, 7] {
            assert_eq!(feed(input, step, output), whole, "pieces of {step}");
        }
        whole
    }

    fn reframed(input: &[u8]) -> String {
        let (out, end) = all(input, Output::Chunked).expect("valid body");
        assert_eq!(end, Some(input.len()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bodies_are_reframed_without_extensions() {
        assert_eq!(
            reframed(b"5\r\nhello\r\n0\r\n\r\n"),
            "5\r\nhello\r\n0\r\n\r\n"
        );
        assert_eq!(
            reframed(b"5;a=b\r\nhello\r\n001 ; x\r\n,\r\n0;last\r\n\r\n"),
            "5\r\nhello\r\n1\r\n,\r\n0\r\n\r\n"
        );
        assert_eq!(
            reframed(b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
            "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"
        );
        let (data, end) = all(
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX: 1\r\n\r\nNEXT",
            Output::Data,
        )
        .unwrap();
        assert_eq!((data, end), (b"hello world".to_vec(), Some(32)));
    }

    /// `Check` consumes what `Chunked` consumes and writes nothing, however the input is split;
    /// it calls the input verbatim only when `Chunked` would write it back unchanged, and does
    /// for lb's own framing. (A trailer field makes it say no: fields are checked one by one
    /// only when framed again.)
    #[test]
    fn check_calls_verbatim_only_the_bodies_reframing_leaves_unchanged() {
        for (input, verbatim) in [
            (&b"5\r\nhello\r\n0\r\n\r\n"[..], true),
            (b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n1000\r\n", true),
            (b"0\r\n\r\n", true),
            (b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", false),
            (b"05\r\nhello\r\n0\r\n\r\n", false),
            (b"5;a=b\r\nhello\r\n0\r\n\r\n", false),
            (b"5\r\nhello\r\n00\r\n\r\n", false),
            (b"5\r\nhello\r\n0;x\r\n\r\n", false),
            (b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", false),
            (b"5\r\nhello\r\n0\r\nHost: h\r\n\r\n", false),
        ] {
            let (out, end) = all(input, Output::Chunked).expect("valid body");
            for step in [1, 2, 3, 7, input.len()] {
                let mut decoder = Decoder::new(Output::Check);
                let mut written = Vec::new();
                let mut pending = Vec::new();
                let mut consumed = 0;
                for piece in input.chunks(step) {
                    pending.extend_from_slice(piece);
                    let decoded = decoder.decode(&pending, &mut written).unwrap();
                    consumed += decoded.consumed;
                    pending.drain(..decoded.consumed);
                }
                assert!(written.is_empty(), "{input:?}");
                assert_eq!(
                    decoder.verbatim(),
                    verbatim,
                    "{input:?} in pieces of {step}"
                );
                if verbatim {
                    assert_eq!(out, input[..consumed], "{input:?}");
                }
                if end.is_some() {
                    assert_eq!(Some(consumed), end, "{input:?}");
                }
            }
        }
    }

    #[test]
    fn trailers_are_checked_and_framing_fields_dropped() {
        assert_eq!(
            reframed(
                b"0\r\nX-Sum: 1\r\nContent-Length: 5\r\nTransfer-Encoding: x\r\nHost: h\r\n\r\n"
            ),
            "0\r\nX-Sum: 1\r\n\r\n"
        );
        for bad in [
            &b"0\r\nBad Name: 1\r\n\r\n"[..],
            b"0\r\nX: a\r\n b\r\n\r\n",
            b"0\r\nX: a\x00\r\n\r\n",
        ] {
            assert_eq!(
                all(bad, Output::Chunked).err(),
                Some(ChunkError::BadTrailer),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_bare_lf_or_cr_anywhere_in_the_framing_is_malformed() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
            b"5;ext\nhello\r\n0\r\n\r\n",
            b"5\rhello",
            b"5\r\nhello\rX",
            b"0\r\n\rX",
        ] {
            assert_eq!(
                all(bad, Output::Chunked).err(),
                Some(ChunkError::BadLineEnd),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            &b"\r\n"[..],
            b";ext\r\n",
            b" 5\r\n",
            b"g\r\n",
            b"5g\r\n",
            b"-1\r\n",
            b"0x5\r\n",
            b"5 5\r\n",
            b"10000000000000000\r\n",
            b"5;a\x01b\r\n",
            b"5\r\nhello\r\nz\r\n",
        ] {
            assert_eq!(
                all(bad, Output::Chunked).err(),
                Some(ChunkError::BadSize),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let mut long = b"5;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'a');
        assert_eq!(
            all(&long, Output::Chunked).err(),
            Some(ChunkError::SizeTooLong)
        );
        let mut trailers = b"0\r\nX-Big: ".to_vec();
        trailers.resize(MAX_TRAILERS + 10, b'a');
        assert_eq!(
            all(&trailers, Output::Chunked).err(),
            Some(ChunkError::TrailersTooLong)
        );
    }

    #[test]
    fn an_unfinished_body_goes_on_and_errors_stick() {
        for input in [
            &b"5"[..],
            b"5\r\nhel",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\n",
            b"0\r\nX: y\r\n",
        ] {
            assert_eq!(all(input, Output::Chunked).unwrap().1, None, "{input:?}");
        }
        let mut decoder = Decoder::new(Output::Data);
        let mut out = Vec::new();
        assert!(decoder.decode(b"zz", &mut out).is_err());
        assert_eq!(
            decoder.decode(b"0\r\n\r\n", &mut out),
            Err(ChunkError::BadSize)
        );
    }
}
