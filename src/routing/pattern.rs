//! routing::pattern: owns the pattern syntax and how two patterns relate; never sees a request.
//!
//! A port of Go's `net/http/pattern.go` (Go 1.22+): [`Pattern::parse`] is `parsePattern`, and
//! [`Relationship`] with `compare_*`, `conflicts_with` and `describe_conflict` are Go's
//! `comparePaths`, `conflictsWith` and `describeConflict`. Go's tests in `pattern_test.go` are
//! ported in `routing/tests.rs`.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A parsed ServeMux pattern: `[METHOD ][HOST]/[PATH]`.
///
/// Equality and hashing use the original text, so two spellings of the same pattern
/// (`GET /a` and `GET  /a`) are different values; [`Router::new`](super::Router::new) is what
/// notices that they match the same requests.
#[derive(Clone)]
pub struct Pattern {
    /// The original text, for messages and for callers that key pools by it.
    text: String,
    /// `None` matches every method.
    method: Option<String>,
    /// Lowercased, because host names are case-insensitive (RFC 9110 §4.2.3); `None` matches
    /// every host.
    host: Option<String>,
    /// Never empty: every path has at least one segment (`/` alone is an anonymous multi).
    pub(super) segments: Vec<Segment>,
}

/// One piece of a pattern's path, in Go's representation (pattern.go `segment`): a trailing `/`
/// is an anonymous multi wildcard and `{$}` is its own segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    /// A literal segment, percent-decoded as Go does (so `/%61` matches `/a`). Bytes, because
    /// `%FF` decodes to something that is not UTF-8.
    Literal(Box<[u8]>),
    /// `{name}`: exactly one path segment, never the trailing slash.
    Wild(Box<str>),
    /// `{name...}`, or the anonymous one of a trailing `/` (empty name): the rest of the path,
    /// which is at least a `/`.
    Multi(Box<str>),
    /// `{$}`: the trailing slash and nothing after it.
    Dollar,
}

/// Why a pattern is invalid; offsets are byte offsets into the pattern text.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern text is empty.
    #[error("empty pattern")]
    Empty,
    /// The method is not an HTTP token.
    #[error("at offset 0: invalid method {method:?} (must be an http token such as GET)")]
    InvalidMethod {
        /// The method as written.
        method: String,
    },
    /// No `/` starts the path.
    #[error("at offset {offset}: host/path missing / (a pattern is [METHOD ][HOST]/PATH)")]
    MissingSlash {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// The host holds a `{`, most likely a path missing its leading `/`.
    #[error("at offset {offset}: host contains '{{' (missing initial '/'?)")]
    HostWildcard {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// The host has a port, which requests never carry when matched.
    #[error(
        "at offset {offset}: host {host:?} includes a port, which never matches because the \
         port is stripped from requests before matching"
    )]
    HostPort {
        /// The host as written.
        host: String,
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// The path is not clean, so no request can match it.
    #[error(
        "at offset {offset}: path {path:?} is not clean (it would be {clean:?}); a pattern with \
         a method other than CONNECT and an unclean path can never match"
    )]
    UncleanPath {
        /// The path as written.
        path: String,
        /// The path once cleaned.
        clean: String,
        /// Byte offset of the path in the pattern.
        offset: usize,
    },
    /// A segment holds a `{` that does not start it.
    #[error("at offset {offset}: bad wildcard segment {segment:?} (must start with '{{')")]
    WildcardStart {
        /// The segment as written.
        segment: String,
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// A wildcard segment does not end with `}`.
    #[error("at offset {offset}: bad wildcard segment {segment:?} (must end with '}}')")]
    WildcardEnd {
        /// The segment as written.
        segment: String,
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// `{$}` is not the last segment.
    #[error("at offset {offset}: {{$}} not at end of path")]
    DollarNotAtEnd {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// A `{name...}` wildcard is not the last segment.
    #[error("at offset {offset}: {{...}} wildcard not at end of path")]
    MultiNotAtEnd {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// A wildcard has no name (`{}`).
    #[error("at offset {offset}: empty wildcard name")]
    EmptyWildcard {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// A wildcard name is not a Go identifier.
    #[error("at offset {offset}: bad wildcard name {name:?} (must be a go identifier)")]
    BadWildcardName {
        /// The wildcard name as written.
        name: String,
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// Two wildcards share a name.
    #[error("at offset {offset}: duplicate wildcard name {name:?}")]
    DuplicateWildcard {
        /// The wildcard name as written.
        name: String,
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
    /// The path has more than [`MAX_SEGMENTS`] segments.
    #[error("at offset {offset}: more than {max} path segments", max = MAX_SEGMENTS)]
    TooManySegments {
        /// Byte offset of the fault in the pattern.
        offset: usize,
    },
}

/// The most segments a pattern's path may have.
///
/// NOTE: Go has no such bound. Matching recurses once per tree level, and the tree is as deep as
/// the longest pattern, so this bounds the stack a lookup can use whatever the request path.
pub const MAX_SEGMENTS: usize = 256;

// === impl Pattern ===

impl Pattern {
    /// Parses `[METHOD ][HOST]/[PATH]` as Go's `parsePattern` does.
    ///
    /// Beyond Go: the host is lowercased, and a host with a port is refused (except for CONNECT),
    /// because requests have their port stripped before matching and such a pattern could never
    /// match.
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        // Go 1.23+: the method is followed by one or more spaces or tabs.
        let (method, rest, rest_offset) = match s.find([' ', '\t']) {
            Some(i) => {
                let after = &s[i + 1..];
                let trimmed = after.trim_start();
                (
                    &s[..i],
                    trimmed.trim_end(),
                    i + 1 + after.len() - trimmed.len(),
                )
            }
            None => ("", s, 0),
        };
        if !method.is_empty() && !is_token(method) {
            return Err(PatternError::InvalidMethod {
                method: method.to_owned(),
            });
        }
        let Some(slash) = rest.find('/') else {
            return Err(PatternError::MissingSlash {
                offset: rest_offset,
            });
        };
        let (host, path) = rest.split_at(slash);
        let path_offset = rest_offset + slash;
        if let Some(j) = host.find('{') {
            return Err(PatternError::HostWildcard {
                offset: rest_offset + j,
            });
        }
        if method != "CONNECT" && has_port(host) {
            return Err(PatternError::HostPort {
                host: host.to_owned(),
                offset: rest_offset,
            });
        }
        // Requests are cleaned before matching (except CONNECT), so such a pattern is dead.
        if !method.is_empty() && method != "CONNECT" && !is_clean(path) {
            return Err(PatternError::UncleanPath {
                path: path.to_owned(),
                clean: clean_path(path),
                offset: path_offset,
            });
        }

        let mut segments = Vec::new();
        let mut seen_names: Vec<&str> = Vec::new();
        let mut rest = path;
        // Invariant: `rest` is empty or starts with '/'.
        while let Some(after_slash) = rest.strip_prefix('/') {
            rest = after_slash;
            // Where this segment starts in `s`, for messages.
            let offset = path_offset + path.len() - rest.len();
            if segments.len() == MAX_SEGMENTS {
                return Err(PatternError::TooManySegments { offset });
            }
            if rest.is_empty() {
                segments.push(Segment::Multi("".into()));
                break;
            }
            let end = rest.find('/').unwrap_or(rest.len());
            let (seg, tail) = rest.split_at(end);
            rest = tail;
            let Some(brace) = seg.find('{') else {
                segments.push(Segment::Literal(unescape(seg).into_owned().into()));
                continue;
            };
            if brace != 0 {
                return Err(PatternError::WildcardStart {
                    segment: seg.to_owned(),
                    offset,
                });
            }
            let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return Err(PatternError::WildcardEnd {
                    segment: seg.to_owned(),
                    offset,
                });
            };
            if name == "$" {
                if !rest.is_empty() {
                    return Err(PatternError::DollarNotAtEnd { offset });
                }
                segments.push(Segment::Dollar);
                break;
            }
            let (name, multi) = match name.strip_suffix("...") {
                Some(name) => (name, true),
                None => (name, false),
            };
            if multi && !rest.is_empty() {
                return Err(PatternError::MultiNotAtEnd { offset });
            }
            if name.is_empty() {
                return Err(PatternError::EmptyWildcard { offset });
            }
            if !is_wildcard_name(name) {
                return Err(PatternError::BadWildcardName {
                    name: name.to_owned(),
                    offset,
                });
            }
            if seen_names.contains(&name) {
                return Err(PatternError::DuplicateWildcard {
                    name: name.to_owned(),
                    offset,
                });
            }
            seen_names.push(name);
            segments.push(if multi {
                Segment::Multi(name.into())
            } else {
                Segment::Wild(name.into())
            });
        }
        debug_assert!(!segments.is_empty(), "a path starts with '/'");

        Ok(Pattern {
            text: s.to_owned(),
            method: (!method.is_empty()).then(|| method.to_owned()),
            host: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
            segments,
        })
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The method this pattern is restricted to; `None` for every method.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The (lowercased) host this pattern is restricted to; `None` for every host.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Whether the path ends in a multi wildcard (a trailing `/` or `{name...}`).
    pub(super) fn ends_in_multi(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Multi(_)))
    }

    /// Go's `conflictsWith`: some request matches both and neither takes precedence.
    ///
    /// Precedence has two rules: a pattern with a host beats one without, and otherwise the
    /// pattern whose method and path match a strict subset of the other's requests wins.
    pub(super) fn conflicts_with(&self, other: &Pattern) -> bool {
        if self.host != other.host {
            // Either exactly one has a host, and it wins by rule 1, or both have different
            // hosts, and they never match the same request.
            return false;
        }
        matches!(
            self.compare_paths_and_methods(other),
            Relationship::Equivalent | Relationship::Overlaps
        )
    }

    pub(super) fn compare_paths_and_methods(&self, other: &Pattern) -> Relationship {
        let methods = self.compare_methods(other);
        if methods == Relationship::Disjoint {
            return Relationship::Disjoint;
        }
        methods.combine(self.compare_paths(other))
    }

    /// Go's `compareMethods`: no method matches all, `GET` matches `GET` and `HEAD`, anything
    /// else only itself.
    pub(super) fn compare_methods(&self, other: &Pattern) -> Relationship {
        match (self.method(), other.method()) {
            (a, b) if a == b => Relationship::Equivalent,
            (None, _) => Relationship::MoreGeneral,
            (_, None) => Relationship::MoreSpecific,
            (Some("GET"), Some("HEAD")) => Relationship::MoreGeneral,
            (Some("HEAD"), Some("GET")) => Relationship::MoreSpecific,
            _ => Relationship::Disjoint,
        }
    }

    /// Go's `comparePaths`.
    pub(super) fn compare_paths(&self, other: &Pattern) -> Relationship {
        let (segs1, segs2) = (&self.segments[..], &other.segments[..]);
        let (multi1, multi2) = (self.ends_in_multi(), other.ends_in_multi());
        // Without a multi, a pattern only matches paths with its own number of segments.
        if segs1.len() != segs2.len() && !multi1 && !multi2 {
            return Relationship::Disjoint;
        }
        let mut rel = Relationship::Equivalent;
        for (s1, s2) in segs1.iter().zip(segs2) {
            rel = rel.combine(compare_segments(s1, s2));
            if rel == Relationship::Disjoint {
                return rel;
            }
        }
        // Past the common length, only a shorter pattern ending in a multi can still match:
        // that multi is more general than the rest of the longer one.
        match segs1.len().cmp(&segs2.len()) {
            std::cmp::Ordering::Equal => rel,
            std::cmp::Ordering::Less if multi1 => rel.combine(Relationship::MoreGeneral),
            std::cmp::Ordering::Greater if multi2 => rel.combine(Relationship::MoreSpecific),
            _ => Relationship::Disjoint,
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(s)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl Hash for Pattern {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

// === impl Segment ===

impl Segment {
    fn is_wild(&self) -> bool {
        matches!(self, Segment::Wild(_) | Segment::Multi(_))
    }

    fn is_multi(&self) -> bool {
        matches!(self, Segment::Multi(_))
    }

    /// Go's `segment.s`: the literal, the wildcard name, or "/" for `{$}`.
    fn text(&self) -> Cow<'_, str> {
        match self {
            Segment::Literal(bytes) => String::from_utf8_lossy(bytes),
            Segment::Wild(name) | Segment::Multi(name) => Cow::Borrowed(name),
            Segment::Dollar => Cow::Borrowed("/"),
        }
    }
}

/// Go's `compareSegments`.
fn compare_segments(s1: &Segment, s2: &Segment) -> Relationship {
    use Segment::*;
    match (s1, s2) {
        (Multi(_), Multi(_)) => Relationship::Equivalent,
        (Multi(_), _) => Relationship::MoreGeneral,
        (_, Multi(_)) => Relationship::MoreSpecific,
        (Wild(_), Wild(_)) => Relationship::Equivalent,
        // A single wildcard never matches the trailing slash.
        (Wild(_), Dollar) | (Dollar, Wild(_)) => Relationship::Disjoint,
        (Wild(_), Literal(_)) => Relationship::MoreGeneral,
        (Literal(_), Wild(_)) => Relationship::MoreSpecific,
        (Dollar, Dollar) => Relationship::Equivalent,
        (Literal(a), Literal(b)) if a == b => Relationship::Equivalent,
        _ => Relationship::Disjoint,
    }
}

/// How the requests two patterns match relate (Go's `relationship`), from the first's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Relationship {
    /// Both match the same requests.
    Equivalent,
    /// The first matches everything the second does, and more.
    MoreGeneral,
    /// The second matches everything the first does, and more.
    MoreSpecific,
    /// No request matches both.
    Disjoint,
    /// Some request matches both, but neither is more specific.
    Overlaps,
}

// === impl Relationship ===

impl Relationship {
    /// Go's `combineRelationships`: the relationship of two patterns given the relationships
    /// of two parts of them (method and path, or two runs of segments).
    pub(super) fn combine(self, other: Relationship) -> Relationship {
        use Relationship::*;
        match self {
            Equivalent => other,
            Disjoint => Disjoint,
            Overlaps if other == Disjoint => Disjoint,
            Overlaps => Overlaps,
            MoreGeneral | MoreSpecific => match other {
                Equivalent => self,
                _ if other == self.inverse() => Overlaps,
                _ => other,
            },
        }
    }

    pub(super) fn inverse(self) -> Relationship {
        match self {
            Relationship::MoreGeneral => Relationship::MoreSpecific,
            Relationship::MoreSpecific => Relationship::MoreGeneral,
            other => other,
        }
    }
}

/// Go's `describeConflict`, for conflicting `new` and `existing`: why neither wins, with
/// example paths where it helps.
pub(super) fn describe_conflict(new: &Pattern, existing: &Pattern) -> String {
    let methods = new.compare_methods(existing);
    let paths = new.compare_paths(existing);
    match (methods.combine(paths), methods, paths) {
        (Relationship::Equivalent, ..) if new.text == existing.text => {
            "duplicate pattern".to_owned()
        }
        (Relationship::Equivalent, ..) => "both match the same requests".to_owned(),
        (_, _, Relationship::Overlaps) => format!(
            "both match some paths, like {:?}, but neither is more specific: {:?} matches {:?} \
             and {:?} does not; {:?} matches {:?} and {:?} does not",
            common_path(new, existing),
            new.text,
            difference_path(new, existing),
            existing.text,
            existing.text,
            difference_path(existing, new),
            new.text,
        ),
        (_, Relationship::MoreGeneral, Relationship::MoreSpecific) => format!(
            "{:?} matches more methods than {:?}, but has a more specific path",
            new.text, existing.text
        ),
        (_, Relationship::MoreSpecific, Relationship::MoreGeneral) => format!(
            "{:?} matches fewer methods than {:?}, but has a more general path",
            new.text, existing.text
        ),
        (rel, methods, paths) => {
            format!("neither is more specific (methods: {methods:?}, paths: {paths:?}: {rel:?})")
        }
    }
}

/// Go's `writeSegment`: a path piece that `seg` matches.
fn write_segment(out: &mut String, seg: &Segment) {
    out.push('/');
    if !seg.is_multi() && *seg != Segment::Dollar {
        out.push_str(&seg.text());
    }
}

/// Go's `commonPath`: a path both patterns match; they must overlap.
pub(super) fn common_path(p1: &Pattern, p2: &Pattern) -> String {
    let mut out = String::new();
    let (segs1, segs2) = (&p1.segments[..], &p2.segments[..]);
    for (s1, s2) in segs1.iter().zip(segs2) {
        let seg = match (s1, s2) {
            // Beyond Go, which writes the multi's empty segment here (`/a//` for `/{x}/{y}/{$}`
            // and `/a/`): the wildcard's name is a segment both match, and reads better.
            (Segment::Wild(_), Segment::Multi(_)) => s1,
            _ if s1.is_wild() => s2,
            _ => s1,
        };
        write_segment(&mut out, seg);
    }
    let common = segs1.len().min(segs2.len());
    for seg in segs1[common..].iter().chain(&segs2[common..]) {
        write_segment(&mut out, seg);
    }
    out
}

/// Go's `differencePath`: a path `p1` matches and `p2` does not; `p1` must overlap or be more
/// general than `p2`.
pub(super) fn difference_path(p1: &Pattern, p2: &Pattern) -> String {
    let mut out = String::new();
    let (segs1, segs2) = (&p1.segments[..], &p2.segments[..]);
    for (s1, s2) in segs1.iter().zip(segs2) {
        match (s1.is_multi(), s2.is_multi()) {
            // From here both match the same paths, so the difference came earlier.
            (true, true) => {
                out.push('/');
                return out;
            }
            // A trailing slash tells them apart, unless s2 is {$}; then any segment does.
            (true, false) => {
                out.push('/');
                if *s2 == Segment::Dollar {
                    let name = s1.text();
                    out.push_str(if name.is_empty() { "x" } else { &name });
                }
                return out;
            }
            _ => {}
        }
        if s1.is_wild() && !s2.is_wild() && s1.text() == s2.text() {
            // Any segment but s2's literal will do; the wildcard's name is that literal.
            out.push('/');
            out.push_str(&s2.text());
            out.push('x');
        } else {
            write_segment(&mut out, s1);
        }
    }
    let common = segs1.len().min(segs2.len());
    for seg in segs1[common..].iter().chain(&segs2[common..]) {
        write_segment(&mut out, seg);
    }
    out
}

/// RFC 9110 §5.6.2 `token`, which a method must be (Go's `validMethod`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Go's `isValidWildcardName`: a Go identifier.
///
/// NOTE: Go uses Unicode categories L and Nd; Rust's `is_alphabetic`/`is_numeric` are slightly
/// wider properties. Only exotic names differ, and only in being accepted.
fn is_wildcard_name(s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(i, c)| c.is_alphabetic() || c == '_' || (i > 0 && c.is_numeric()))
        && !s.is_empty()
}

/// Whether `host` carries a port, which never matches because requests have theirs stripped.
fn has_port(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(rest) => rest
            .find(']')
            .is_some_and(|i| rest[i + 1..].starts_with(':')),
        // Several colons are a bare IPv6 address, not host:port.
        None => host.bytes().filter(|&b| b == b':').count() == 1,
    }
}

/// Go's `pathUnescape` for one segment: percent-decodes, or returns the input unchanged when
/// it is not validly escaped. Borrows unless there is something to decode.
pub(super) fn unescape(seg: &str) -> Cow<'_, [u8]> {
    let bytes = seg.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?));
            match hex {
                Some(b) => out.push(b),
                None => return Cow::Borrowed(bytes),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `clean_path(p) == p`, without allocating: rooted, no empty segment except a
/// trailing one, and no `.` or `..` segment.
pub(super) fn is_clean(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Go's `cleanPath`: the canonical form of `p`, rooted, with `.`, `..` and repeated slashes
/// resolved lexically (Go's `path.Clean`), keeping a trailing slash.
pub(super) fn clean_path(p: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            // At the root, ".." stays at the root.
            ".." => {
                kept.pop();
            }
            seg => kept.push(seg),
        }
    }
    let mut clean = String::with_capacity(p.len() + 1);
    for seg in &kept {
        clean.push('/');
        clean.push_str(seg);
    }
    if clean.is_empty() || p.ends_with('/') {
        clean.push('/');
    }
    clean
}
