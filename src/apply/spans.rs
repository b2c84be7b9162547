//! apply::spans: owns the recorded spans of each applied pool's `backends` array, by which a
//! backend edit finds its array without parsing the file.
//!
//! Invariant: a recorded span is *used* only after the bytes at it in the text being edited are
//! checked to read as one `backends = [...]` array holding exactly the applied entries of that
//! pool ([`known_backends_span`]); spans come from a full parse of the applied text and change
//! only by [`shifted`] after a splice at one of them. Any doubt answers `None`, and the caller
//! parses the file instead. It never edits text.

use std::ops::Range;

use crate::config::{self, BackendsSpans, Config};

/// Where pool `pattern`'s `backends` array is in `text`, by the recorded `spans` of the text
/// `current` was parsed from, provided the bytes there are one array holding exactly the
/// entries `current` has for that pool. `None`: let the edit find it by parsing.
pub(super) fn known_backends_span(
    current: &Config,
    spans: &BackendsSpans,
    text: &str,
    pattern: &str,
) -> Option<Range<usize>> {
    let index = current.pools.iter().position(|p| p.pattern == pattern)?;
    let span = spans.get(index)?.clone()?;
    let entries = config::backends_at(text, span.clone(), pattern)?;
    (entries == current.pools[index].backends).then_some(span)
}

/// The recorded spans after the array at `old` was replaced by `new_len` bytes: that array's
/// span resized, the ones after it moved. `None` when `old` is not one of them exactly or
/// overlaps another (then the new text is parsed in full).
pub(super) fn shifted(
    spans: &BackendsSpans,
    old: &Range<usize>,
    new_len: usize,
) -> Option<BackendsSpans> {
    if !spans.iter().any(|s| s.as_ref() == Some(old)) {
        return None;
    }
    spans
        .iter()
        .map(|span| match span {
            None => Some(None),
            Some(s) if s == old => Some(Some(old.start..old.start + new_len)),
            Some(s) if s.end <= old.start => Some(Some(s.clone())),
            Some(s) if s.start >= old.end => Some(Some(
                s.start - old.len() + new_len..s.end - old.len() + new_len,
            )),
            Some(_) => None,
        })
        .collect()
}
