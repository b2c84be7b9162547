//! config::edit: owns the smallest-diff, comment-preserving edits of lb.toml text that the
//! control API makes; never reads or writes files, never validates semantics (the caller parses
//! the result through the normal path).
//!
//! The rules that keep `git diff` to one line:
//!
//! - A backend is appended as one new line after the last element of a multi-line `backends`
//!   array (after any comment lines at its end), with the indentation of the elements above it
//!   and the array's trailing-comma style. A single-line array grows inline (`["a", "b"]`). A pool
//!   without `backends` gets one `backends = ["b"]` line after its last key.
//! - Removing a backend deletes its whole line, its own trailing comment included. Comment lines
//!   above it stay, as do the comment lines above the next element. Emptying a multi-line array
//!   leaves `backends = [` and `]` on their lines. When the array has no trailing comma and its
//!   last element goes, the new last element keeps its comma (a valid trailing comma), so the
//!   removal is still a one-line diff.
//! - A pool is appended at the end of the file after one blank line of its own (even when the
//!   file already ends with a blank line: the two cannot be told apart on removal). Removing a
//!   pool deletes its header, its keys, its sub-tables, the comment
//!   lines directly above its header and one blank line before those; the comment lines directly
//!   above the next header belong to that header and stay. When there is no blank line above
//!   (the table opens the file, or follows the previous one directly) the one below goes
//!   instead. A comment block that starts on the first line of the file is the file's preamble
//!   and stays.
//! - Add-then-remove restores the text byte for byte (a backend added to a multi-line array
//!   without a trailing comma being the one exception, see above).
//!
//! toml_edit re-emits every key/value line it holds with `\n` and ends the file with a newline,
//! so a CRLF file is edited as LF and converted back, a missing final newline is kept missing,
//! and every edit is checked to have changed only the bytes it owns (the `backends` array, or the
//! gap after the pool's last key). An edit that would touch anything else — a file with mixed
//! line endings, say — is refused as [`EditError::NotEditable`] rather than reformatting the file.

use std::ops::Range;

use toml_edit::{Array, Decor, Document, DocumentMut, Item, Key, RawString, Table, Value};

mod rollout;
pub use rollout::{edit_rollout, set_canary_backend_state, RolloutEdit};

/// One status check of a new pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// The path probed on each backend, e.g. `/healthz`.
    pub url_path: String,
    /// Bodies, whitespace trimmed, that count as healthy.
    pub healthy_values: Vec<String>,
}

/// The explicit keys a new pool table is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// `type`, as the file spells it (`p2c`, `p2c_ewma`).
    pub pool_type: String,
    /// `interval`, as the file spells it (`10s`).
    pub interval: String,
    /// One `[[pools."PATTERN".health_checks]]` table each.
    pub health_checks: Vec<HealthCheckSpec>,
}

/// Why an edit of lb.toml text was refused; the text is then left as it was.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The text does not parse as TOML.
    #[error("the file is not valid TOML: {0}")]
    Syntax(String),
    /// No `[pools."PATTERN"]` table has this pattern.
    #[error("no pool {pattern:?} in the file")]
    PoolNotFound {
        /// The pool's pattern, as given.
        pattern: String,
    },
    /// A pool with this pattern is already in the file.
    #[error("pool {pattern:?} already exists")]
    PoolExists {
        /// The pool's pattern, as given.
        pattern: String,
    },
    /// The pool exists but does not list this backend.
    #[error("pool {pattern:?} has no backend {backend}")]
    BackendNotFound {
        /// The pool's pattern, as given.
        pattern: String,
        /// The backend, as given.
        backend: String,
    },
    /// The edit would reformat bytes it does not own, so it is left to a person.
    #[error("pool {pattern:?} cannot be edited automatically: {reason}; edit the file by hand")]
    NotEditable {
        /// The pool's pattern, as given.
        pattern: String,
        /// What in the file stops the edit.
        reason: String,
    },
}

impl EditError {
    fn not_editable(pattern: &str, reason: impl Into<String>) -> Self {
        Self::NotEditable {
            pattern: pattern.to_owned(),
            reason: reason.into(),
        }
    }

    fn pool_not_found(pattern: &str) -> Self {
        Self::PoolNotFound {
            pattern: pattern.to_owned(),
        }
    }

    fn no_matching_backend(pattern: &str) -> Self {
        Self::BackendNotFound {
            pattern: pattern.to_owned(),
            backend: "that matches".to_owned(),
        }
    }
}

/// The address of a backend entry: a plain string, or the `addr` of an inline table. This is
/// what the `matches` predicates of [`remove_backend`] and [`set_backend_state`] receive.
pub fn entry_addr(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s.value()),
        Value::InlineTable(t) => t.get("addr").and_then(Value::as_str),
        _ => None,
    }
}

// === Backends ===

/// A backend edit's new text, and where the edit happened when that lets the caller skip a full
/// re-parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The whole file's new text.
    pub text: String,
    /// The span, in the *input* text, of the pool's `backends` array when the edit replaced
    /// only that array's bytes: everything before and after it is the input's, byte for byte.
    /// `None` when the edit added a `backends` key or went through a line-ending conversion.
    pub backends: Option<Range<usize>>,
}

/// Appends `backend` to the pool's `backends` array (creating the key if absent).
pub fn add_backend(text: &str, pattern: &str, backend: &str) -> Result<String, EditError> {
    add_backend_edit(text, pattern, backend, None).map(|edited| edited.text)
}

/// [`add_backend`], saying where the edit happened. `known` is where the caller believes the
/// pool's `backends` array is (see [`edit_array_in_place`]).
pub fn add_backend_edit(
    text: &str,
    pattern: &str,
    backend: &str,
    known: Option<Range<usize>>,
) -> Result<Edited, EditError> {
    let push = |array: &mut Array| {
        push_backend(array, backend);
        Ok(())
    };
    if let Some(edited) = edit_array_in_place(text, pattern, known, &push)? {
        return Ok(edited);
    }
    let text = with_line_endings(text, |text| {
        let doc = parse(text)?;
        let pool = find_pool(doc.as_table(), pattern)?;
        let window = match pool.get("backends") {
            Some(item) => array_span(item, pattern)?,
            None if pool.is_implicit() && !pool.is_dotted() => {
                return Err(EditError::not_editable(
                    pattern,
                    "it has no [pools.\"…\"] table of its own to add `backends` to",
                ))
            }
            None => insertion_window(&doc, pool),
        };
        let mut doc = doc.into_mut();
        let table = find_pool_mut(&mut doc, pattern)?;
        match table.get_mut("backends").and_then(Item::as_array_mut) {
            Some(array) => push(array)?,
            None => insert_backends_key(table, backend),
        }
        finish(text, doc.to_string(), window, pattern)
    })?;
    Ok(Edited {
        text,
        backends: None,
    })
}

/// Removes the first entry of the pool's `backends` whose address satisfies `matches`.
pub fn remove_backend(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
) -> Result<String, EditError> {
    remove_backend_edit(text, pattern, matches, None).map(|edited| edited.text)
}

/// [`remove_backend`], saying where the edit happened (`known`: as for [`add_backend_edit`]).
pub fn remove_backend_edit(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
    known: Option<Range<usize>>,
) -> Result<Edited, EditError> {
    let remove = |array: &mut Array| {
        let backend_idx = array
            .iter()
            .position(|v| entry_addr(v).is_some_and(matches))
            .ok_or_else(|| EditError::no_matching_backend(pattern))?;
        remove_element(array, backend_idx);
        Ok(())
    };
    edit_backends(text, pattern, known, &remove)
}

/// Sets the administrative state of the first matching backend entry, in place: `enabled`
/// writes the plain `"IP:PORT"` string, anything else `{ addr = "IP:PORT", state = "..." }`.
/// Either way the entry keeps its line, indentation and comment, so the diff is one line.
pub fn set_backend_state(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
    state: &str,
) -> Result<String, EditError> {
    set_backend_state_edit(text, pattern, matches, state, None).map(|edited| edited.text)
}

/// [`set_backend_state`], saying where the edit happened (`known`: as for [`add_backend_edit`]).
pub fn set_backend_state_edit(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
    state: &str,
    known: Option<Range<usize>>,
) -> Result<Edited, EditError> {
    let set = |array: &mut Array| {
        let entry = array
            .iter_mut()
            .find(|v| entry_addr(v).is_some_and(matches))
            .ok_or_else(|| EditError::no_matching_backend(pattern))?;
        *entry = rollout::with_state(entry, state)?;
        Ok(())
    };
    edit_backends(text, pattern, known, &set)
}

type ArrayEdit<'a> = dyn Fn(&mut Array) -> Result<(), EditError> + 'a;

/// Runs `edit` on the pool's existing `backends` array.
fn edit_backends(
    text: &str,
    pattern: &str,
    known: Option<Range<usize>>,
    edit: &ArrayEdit,
) -> Result<Edited, EditError> {
    if let Some(edited) = edit_array_in_place(text, pattern, known, edit)? {
        return Ok(edited);
    }
    let text = with_line_endings(text, |text| {
        let (window, mut doc) = backends_of(text, pattern)?;
        edit(backends_mut(&mut doc, pattern)?)?;
        finish(text, doc.to_string(), window, pattern)
    })?;
    Ok(Edited {
        text,
        backends: None,
    })
}

/// The fast form of a `backends` edit: the array's own text is edited as a one-key document and
/// spliced back, so the rest of a large file is neither made editable nor rendered again (on a
/// large file that was most of an edit's cost). toml_edit renders an array the same
/// wherever it sits, so the result is the one the whole-document edit gives, and by
/// construction only the array's bytes change. `None` (use the whole-document path) when the
/// text has a `\r` (line-ending handling and the mixed-ending refusal live there) or the pool
/// has no `backends` key.
///
/// `known` skips even the whole-document parse that finds the array: it is
/// the span the caller recorded for this pool's array when it parsed this very text (the
/// applier keeps them per applied file, `config::parse_with_spans`, shifted after each splice,
/// and checks the bytes there hold the applied entries). It is used only when the bytes there
/// read as `backends = [ … ]`; otherwise the whole document is parsed to find the array.
fn edit_array_in_place(
    text: &str,
    pattern: &str,
    known: Option<Range<usize>>,
    edit: &ArrayEdit,
) -> Result<Option<Edited>, EditError> {
    if text.contains('\r') {
        return Ok(None);
    }
    let window = match known.filter(|span| is_backends_value(text, span)) {
        Some(span) => span,
        None => {
            let doc = parse(text)?;
            let pool = find_pool(doc.as_table(), pattern)?;
            let Some(item) = pool.get("backends") else {
                return Ok(None);
            };
            array_span(item, pattern)?
        }
    };
    let Some(array_text) = text.get(window.clone()) else {
        return Ok(None);
    };
    const KEY: &str = "backends = ";
    let mut small = parse(&format!("{KEY}{array_text}\n"))?.into_mut();
    let Some(array) = small.get_mut("backends").and_then(Item::as_array_mut) else {
        return Ok(None);
    };
    edit(array)?;
    let rendered = small.to_string();
    let Some(new_array) = rendered
        .strip_prefix(KEY)
        .and_then(|rest| rest.strip_suffix('\n'))
    else {
        return Ok(None);
    };
    let mut out = String::with_capacity(text.len() + new_array.len());
    out.push_str(&text[..window.start]);
    out.push_str(new_array);
    out.push_str(&text[window.end..]);
    Ok(Some(Edited {
        text: out,
        backends: Some(window),
    }))
}

/// Whether `span` in `text` is an array value bracket to bracket, right after a bare
/// `backends =` key: a guard on a recorded span, not a parse (the caller vouches for the rest).
fn is_backends_value(text: &str, span: &Range<usize>) -> bool {
    let (Some(before), Some(array)) = (text.get(..span.start), text.get(span.clone())) else {
        return false;
    };
    let blank = [' ', '\t'];
    let key = before
        .trim_end_matches(blank)
        .strip_suffix('=')
        .map(|b| b.trim_end_matches(blank))
        .and_then(|b| b.strip_suffix("backends"));
    array.starts_with('[')
        && array.ends_with(']')
        && key.is_some_and(|b| b.is_empty() || b.ends_with(['\n', ' ', '\t', '{', ',']))
}

/// Parses `text`, requires the pool to have a `backends` array, and returns the array's span
/// (the only bytes an edit of it may change) with the document made editable.
fn backends_of(text: &str, pattern: &str) -> Result<(Range<usize>, DocumentMut), EditError> {
    let doc = parse(text)?;
    let pool = find_pool(doc.as_table(), pattern)?;
    let item = pool
        .get("backends")
        .ok_or_else(|| EditError::no_matching_backend(pattern))?;
    let window = array_span(item, pattern)?;
    Ok((window, doc.into_mut()))
}

fn backends_mut<'a>(doc: &'a mut DocumentMut, pattern: &str) -> Result<&'a mut Array, EditError> {
    find_pool_mut(doc, pattern)?
        .get_mut("backends")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| EditError::no_matching_backend(pattern))
}

fn array_span(item: &Item, pattern: &str) -> Result<Range<usize>, EditError> {
    match item {
        Item::Value(Value::Array(array)) => array
            .span()
            .ok_or_else(|| EditError::not_editable(pattern, "`backends` has no position")),
        _ => Err(EditError::not_editable(
            pattern,
            "`backends` is not an array",
        )),
    }
}

/// The gap after the pool's last key, up to whatever follows it: where toml_edit puts a new key.
fn insertion_window(doc: &Document<String>, pool: &Table) -> Range<usize> {
    let mut own = Vec::new();
    if !pool.is_implicit() {
        own.extend(pool.span());
    }
    collect_value_spans(pool, &mut own);
    let anchor = own.iter().map(|span| span.end).max().unwrap_or(0);
    let mut all = Vec::new();
    collect_spans(doc.as_table(), &mut all);
    let next = all
        .iter()
        .map(|span| span.start)
        .filter(|start| *start >= anchor)
        .min()
        .unwrap_or(doc.raw().len());
    anchor..next
}

/// Appends one element, as one new line in a multi-line array and inline otherwise.
fn push_backend(array: &mut Array, backend: &str) {
    normalise_trailing(array);
    let mut value = Value::from(backend);
    let trailing = raw(array.trailing()).to_owned();
    if is_multiline(array) {
        let indent = element_indent(array);
        match trailing.rsplit_once('\n') {
            // The new element goes after everything before `]`'s line: the last element's own
            // comment and any comment lines under it. `before` keeps its `\r`, if any.
            Some((before, after)) => {
                let eol = if before.ends_with('\r') { "\r\n" } else { "\n" };
                value.decor_mut().set_prefix(format!("{before}\n{indent}"));
                array.set_trailing(format!("{eol}{after}"));
            }
            // `]` hangs after the last element (`"a",\n  "b"]`): keep it there.
            None => {
                let crlf = array.iter().any(|v| prefix_of(v).contains("\r\n"));
                let eol = if crlf { "\r\n" } else { "\n" };
                value.decor_mut().set_prefix(format!("{eol}{indent}"));
            }
        }
        if array.is_empty() {
            array.set_trailing_comma(true);
        }
    } else if array.is_empty() {
        // `[ ]` becomes `[ "b" ]`: the inner space is mirrored so removing restores it.
        value.decor_mut().set_prefix(trailing);
    } else {
        value.decor_mut().set_prefix(" ");
    }
    value.decor_mut().set_suffix("");
    array.push_formatted(value);
}

/// Inserts `backends = ["b"]` after the table's last key, indented like that key.
fn insert_backends_key(table: &mut Table, backend: &str) {
    let mut array = Array::new();
    array.push(backend);
    let indent = if table.is_dotted() {
        None
    } else {
        table
            .iter()
            .filter(|(_, item)| item.is_value())
            .last()
            .and_then(|(name, _)| table.key(name))
            .and_then(|key| key.leaf_decor().prefix())
            .map(raw)
            .filter(|prefix| prefix.chars().all(|c| c == ' ' || c == '\t'))
            .map(str::to_owned)
    };
    let mut key = Key::new("backends");
    if let Some(indent) = indent {
        key = key.with_leaf_decor(Decor::new(indent, " "));
    }
    table.insert_formatted(&key, toml_edit::value(array));
}

/// Removes one element; in a multi-line array, its whole line.
///
/// `toml_edit` keeps what sits between the elements in their decor: an element's prefix holds the
/// previous element's comment, any full comment lines, and its own indentation; what follows the
/// last element sits in the array's trailing. So "the line of element i" spans from the last
/// newline of its prefix to the first newline of the next prefix (or of the trailing).
fn remove_element(array: &mut Array, backend_idx: usize) {
    normalise_trailing(array);
    let removed_prefix = array.get(backend_idx).map(prefix_of).unwrap_or_default();
    let is_last = backend_idx + 1 == array.len();
    let following = match array.get(backend_idx + 1) {
        Some(next) => prefix_of(next),
        None => raw(array.trailing()).to_owned(),
    };
    array.remove(backend_idx);

    let replacement = match (removed_prefix.rsplit_once('\n'), following.split_once('\n')) {
        // The element had a line of its own: drop from its indentation to the end of its line.
        (Some((keep, _)), Some((_, rest))) => {
            if is_last && !array.is_empty() {
                // The new last element's comma is still in the text; keep rendering it rather
                // than touching that line too.
                array.set_trailing_comma(true);
            }
            Some(format!("{keep}\n{rest}"))
        }
        // The next element shared the removed one's line: it takes the removed one's place.
        (_, None) if !is_last => Some(removed_prefix),
        // The element shared its line with the previous one, or `]` hangs after it: dropping the
        // element with its prefix leaves the rest as it was.
        _ => None,
    };
    if let Some(replacement) = replacement {
        match array.get_mut(backend_idx) {
            Some(next) => {
                next.decor_mut().set_prefix(replacement);
            }
            None => array.set_trailing(replacement),
        }
    }
}

fn raw(s: &RawString) -> &str {
    s.as_str().unwrap_or("")
}

fn prefix_of(value: &Value) -> String {
    value.decor().prefix().map(raw).unwrap_or("").to_owned()
}

fn is_multiline(array: &Array) -> bool {
    raw(array.trailing()).contains('\n') || array.iter().any(|v| prefix_of(v).contains('\n'))
}

/// Without a trailing comma, the whitespace (and comment) before `]` is the last element's
/// suffix; move it to the array's trailing so elements can be appended or removed after it.
fn normalise_trailing(array: &mut Array) {
    let Some(last) = array.iter_mut().last() else {
        return;
    };
    let suffix = last.decor().suffix().map(raw).unwrap_or("").to_owned();
    if suffix.is_empty() {
        return;
    }
    last.decor_mut().set_suffix("");
    let trailing = format!("{suffix}{}", raw(array.trailing()));
    array.set_trailing(trailing);
}

/// The indentation of the last element that starts a line, else of the first non-blank line
/// inside an empty array (a comment), else two spaces.
fn element_indent(array: &Array) -> String {
    let from_elements = array
        .iter()
        .filter_map(|v| {
            prefix_of(v)
                .rsplit_once('\n')
                .map(|(_, indent)| indent.to_owned())
        })
        .last();
    let from_trailing = || {
        raw(array.trailing())
            .lines()
            // The first line is the rest of the `[` line.
            .skip(1)
            .find(|line| !line.trim().is_empty())
            .map(|line| line[..line.len() - line.trim_start().len()].to_owned())
    };
    from_elements
        .or_else(from_trailing)
        .unwrap_or_else(|| "  ".to_owned())
}

// === Pools ===

/// Appends a `[pools."PATTERN"]` table with explicit keys, after one blank line.
pub fn add_pool(text: &str, pattern: &str, spec: &PoolSpec) -> Result<String, EditError> {
    with_line_endings(text, |text| {
        let doc = parse(text)?;
        match doc.as_table().get("pools") {
            None => {}
            Some(Item::Table(pools)) if pools.contains_key(pattern) => {
                return Err(EditError::PoolExists {
                    pattern: pattern.to_owned(),
                })
            }
            Some(Item::Table(_)) => {}
            Some(Item::Value(Value::InlineTable(pools))) if pools.contains_key(pattern) => {
                return Err(EditError::PoolExists {
                    pattern: pattern.to_owned(),
                })
            }
            Some(_) => {
                return Err(EditError::not_editable(
                    pattern,
                    "`pools` is not written as [pools.\"…\"] tables",
                ))
            }
        }

        let mut table = format!(
            "[pools.{}]\ntype = {}\ninterval = {}\n",
            Key::new(pattern).display_repr(),
            quoted(&spec.pool_type),
            quoted(&spec.interval)
        );
        if spec.health_checks.is_empty() {
            table.push_str("health_checks = []\n");
        } else {
            table.push_str("health_checks = [\n");
            for check in &spec.health_checks {
                let values: Vec<String> = check.healthy_values.iter().map(|v| quoted(v)).collect();
                table.push_str(&format!(
                    "  {{ url_path = {}, healthy_values = [{}] }},\n",
                    quoted(&check.url_path),
                    values.join(", ")
                ));
            }
            table.push_str("]\n");
        }
        table.push_str("backends = []\n");

        let mut out = text.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        // NOTE: one blank line of our own even when the file already ends with one (then there
        // are two): remove_pool takes exactly one back, and a file's own trailing blank line is
        // indistinguishable from ours, so only this keeps add-then-remove byte-identical.
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&table);
        Ok(out)
    })
}

/// Removes the pool's table and sub-tables with their comments and one blank line (see the
/// module docs for which lines belong to a table).
pub fn remove_pool(text: &str, pattern: &str) -> Result<String, EditError> {
    with_line_endings(text, |text| {
        let doc = parse(text)?;
        let pool = find_pool(doc.as_table(), pattern)?;
        if pool.is_dotted() {
            return Err(EditError::not_editable(
                pattern,
                "the pool is written with dotted keys, not a [pools.\"…\"] table",
            ));
        }
        let mut all_headers = Vec::new();
        collect_headers(doc.as_table(), &mut all_headers);
        let mut own_headers = Vec::new();
        collect_headers_of(pool, &mut own_headers);
        if own_headers.is_empty() {
            return Err(EditError::not_editable(pattern, "the pool has no [header]"));
        }
        let mut spans = Vec::new();
        collect_spans(doc.as_table(), &mut spans);
        let lines = Lines::new(text, &spans);

        let mut regions: Vec<Range<usize>> = own_headers
            .iter()
            .map(|header| lines.region(*header, &all_headers))
            .collect();
        regions.sort_by_key(|region| region.start);
        let mut merged: Vec<Range<usize>> = Vec::new();
        for region in regions {
            match merged.last_mut() {
                Some(last) if region.start <= last.end => last.end = last.end.max(region.end),
                _ => merged.push(region),
            }
        }
        // A table takes one blank line with it: the one above it, or when there is none (it
        // opens the file or follows the previous table directly), the one below it.
        for region in &mut merged {
            if !lines.is_blank(region.start) && lines.is_blank(region.end) {
                region.end += 1;
            }
        }

        let mut out = String::with_capacity(text.len());
        let mut kept_from = 0;
        for region in &merged {
            out.push_str(&text[kept_from..lines.start(region.start)]);
            kept_from = lines.start(region.end);
        }
        out.push_str(&text[kept_from..]);
        Ok(out)
    })
}

/// The lines of the text, aware of where TOML content (keys, values, headers) ends, so that a
/// `#` line inside a multi-line string is never taken for a comment.
struct Lines<'a> {
    /// Byte offset and text (without line break) of each line.
    lines: Vec<(usize, &'a str)>,
    text_len: usize,
    /// Every key, value and header span in the document.
    spans: &'a [Range<usize>],
}

impl<'a> Lines<'a> {
    fn new(text: &'a str, spans: &'a [Range<usize>]) -> Self {
        let mut lines = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            lines.push((start, line.trim_end_matches(['\n', '\r'])));
            start += line.len();
        }
        Self {
            lines,
            text_len: text.len(),
            spans,
        }
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// The byte offset of line `i`, or the end of the text for `i == len()`.
    fn start(&self, i: usize) -> usize {
        self.lines.get(i).map_or(self.text_len, |(start, _)| *start)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.lines
            .iter()
            .rposition(|(start, _)| *start <= offset)
            .unwrap_or(0)
    }

    fn is_blank(&self, i: usize) -> bool {
        self.lines.get(i).is_some_and(|(_, l)| l.trim().is_empty())
    }

    fn is_comment(&self, i: usize) -> bool {
        self.lines
            .get(i)
            .is_some_and(|(_, l)| l.trim_start().starts_with('#'))
    }

    /// The first line that may be comment or whitespace before `offset`: the one after the line
    /// where the last content before `offset` ends.
    fn free_from(&self, offset: usize) -> usize {
        self.spans
            .iter()
            .map(|span| span.end)
            .filter(|end| *end <= offset && *end > 0)
            .max()
            .map_or(0, |end| self.line_of(end - 1) + 1)
    }

    /// The lines of the table whose header starts at `header`: from one blank line and the
    /// comment lines above it, to the comments and blank lines above the next header.
    fn region(&self, header: usize, all_headers: &[usize]) -> Range<usize> {
        let header_line = self.line_of(header);
        let floor = self.free_from(header);
        let mut first = header_line;
        while first > floor && self.is_comment(first - 1) {
            first -= 1;
        }
        if first == 0 {
            // A comment block opening the file describes the file, not this table.
            first = header_line;
        }
        if first > floor && self.is_blank(first - 1) {
            first -= 1;
        }

        let next = all_headers.iter().copied().filter(|h| *h > header).min();
        let end = match next {
            Some(next) => {
                let floor = self.free_from(next).max(header_line + 1);
                let mut end = self.line_of(next);
                while end > floor && self.is_comment(end - 1) {
                    end -= 1;
                }
                while end > floor && self.is_blank(end - 1) {
                    end -= 1;
                }
                end
            }
            None => self.len(),
        };
        first..end
    }
}

// === Shared ===

fn parse(text: &str) -> Result<Document<String>, EditError> {
    let syntax = |e: &dyn std::fmt::Display| EditError::Syntax(e.to_string().trim().to_owned());
    // toml_edit panics ("all items have spans") while reporting some invalid documents, e.g.
    // `==\n.=` (found by the `edit` fuzz target); catch_unwind turns that into a syntax error.
    // (lb only edits text that config::parse accepted, so this never fires there; a pre-parse
    // with `toml` to avoid the panic message would cost a second parse on every edit.)
    std::panic::catch_unwind(|| Document::parse(text.to_owned()))
        .map_err(|_| syntax(&"the TOML parser failed on this text"))?
        .map_err(|e| syntax(&e))
}

/// A TOML basic string for `s`, escaped as needed.
fn quoted(s: &str) -> String {
    Value::from(s).to_string().trim().to_owned()
}

/// The pool's table: a `[pools."PATTERN"]` table, or one made of dotted keys.
fn find_pool<'a>(root: &'a Table, pattern: &str) -> Result<&'a Table, EditError> {
    let pools = match root.get("pools") {
        Some(Item::Table(pools)) => pools,
        Some(Item::Value(Value::InlineTable(pools))) if pools.contains_key(pattern) => {
            return Err(EditError::not_editable(
                pattern,
                "`pools` is an inline table",
            ))
        }
        _ => return Err(EditError::pool_not_found(pattern)),
    };
    match pools.get(pattern) {
        Some(Item::Table(pool)) => Ok(pool),
        Some(Item::Value(Value::InlineTable(_))) => Err(EditError::not_editable(
            pattern,
            "the pool is an inline table",
        )),
        _ => Err(EditError::pool_not_found(pattern)),
    }
}

fn find_pool_mut<'a>(doc: &'a mut DocumentMut, pattern: &str) -> Result<&'a mut Table, EditError> {
    doc.get_mut("pools")
        .and_then(Item::as_table_mut)
        .and_then(|pools| pools.get_mut(pattern))
        .and_then(Item::as_table_mut)
        .ok_or_else(|| EditError::pool_not_found(pattern))
}

/// Runs `edit` on LF text when the file consistently uses CRLF, converting the result back:
/// toml_edit writes `\n` after every key/value line it re-emits.
fn with_line_endings(
    text: &str,
    edit: impl FnOnce(&str) -> Result<String, EditError>,
) -> Result<String, EditError> {
    let n_crlf = text.matches("\r\n").count();
    if n_crlf > 0 && n_crlf == text.matches('\n').count() {
        Ok(edit(&text.replace("\r\n", "\n"))?.replace('\n', "\r\n"))
    } else {
        edit(text)
    }
}

/// Checks that toml_edit's output differs from `text` only inside `window` (restoring a missing
/// final newline first). Whether it parses is the caller's check (lb parses every edit before
/// writing it).
fn finish(
    text: &str,
    mut out: String,
    window: Range<usize>,
    pattern: &str,
) -> Result<String, EditError> {
    if !text.is_empty() && !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    if !only_window_changed(text, &out, window) {
        return Err(EditError::not_editable(
            pattern,
            "the edit would also reformat other lines of the file (mixed line endings?)",
        ));
    }
    Ok(out)
}

/// Whether `new` is `old` with at most the bytes in `window` replaced: everything before the
/// window is a prefix of `new` and everything after it a suffix, without overlapping.
fn only_window_changed(old: &str, new: &str, window: Range<usize>) -> bool {
    let (old, new) = (old.as_bytes(), new.as_bytes());
    match (old.get(..window.start), old.get(window.end..)) {
        (Some(before), Some(after)) => {
            before.len() + after.len() <= new.len()
                && new.starts_with(before)
                && new.ends_with(after)
        }
        _ => false,
    }
}

/// Every key, value and table-header span, for telling content from comments.
fn collect_spans(table: &Table, out: &mut Vec<Range<usize>>) {
    if !table.is_implicit() {
        out.extend(table.span());
    }
    for (name, item) in table.iter() {
        out.extend(table.key(name).and_then(Key::span));
        match item {
            Item::Value(value) => out.extend(value.span()),
            Item::Table(t) => collect_spans(t, out),
            Item::ArrayOfTables(tables) => tables.iter().for_each(|t| collect_spans(t, out)),
            Item::None => {}
        }
    }
}

/// The spans of the values written under `table`'s own header (or dotted keys), not those of
/// its `[sub.tables]`.
fn collect_value_spans(table: &Table, out: &mut Vec<Range<usize>>) {
    for (_, item) in table.iter() {
        match item {
            Item::Value(value) => out.extend(value.span()),
            Item::Table(t) if t.is_dotted() => collect_value_spans(t, out),
            _ => {}
        }
    }
}

/// Start offsets of every `[table]` and `[[array]]` header under `table` (not its own).
fn collect_headers(table: &Table, out: &mut Vec<usize>) {
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => collect_headers_of(t, out),
            Item::ArrayOfTables(tables) => tables.iter().for_each(|t| collect_headers_of(t, out)),
            _ => {}
        }
    }
}

/// Start offsets of `table`'s own header (if it has one) and of every header under it.
fn collect_headers_of(table: &Table, out: &mut Vec<usize>) {
    // An implicit table (`pools` in `[pools."/"]`) or a dotted one has no header line; its span
    // is that of a key.
    if !table.is_implicit() {
        out.extend(table.span().map(|span| span.start));
    }
    collect_headers(table, out);
}

#[cfg(test)]
mod tests;
