//! config::edit: owns the smallest-diff, comment-preserving edits of lb.toml text that the
//! control API makes; never reads or writes files, never validates semantics (the caller parses
//! the result through the normal path).
//!
//! The rules that keep `git diff` to one line: a backend is appended as one new line matching its
//! neighbours' indentation and comma style; removing one deletes its whole line (and only its
//! own trailing comment); a pool is appended at the end of the file after one blank line and
//! removed together with that blank line. Add-then-remove restores the text byte for byte.

use toml_edit::{Array, DocumentMut, Item, RawString, Table, Value};

/// One status check of a new pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub url_path: String,
    pub healthy_values: Vec<String>,
}

/// The explicit keys a new pool table is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub pool_type: String,
    pub interval: String,
    pub health_checks: Vec<HealthCheckSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the file is not valid TOML: {0}")]
    Syntax(String),
    #[error("no pool {pattern:?} in the file")]
    PoolNotFound { pattern: String },
    #[error("pool {pattern:?} already exists")]
    PoolExists { pattern: String },
    #[error("pool {pattern:?} has no backend {backend}")]
    BackendNotFound { pattern: String, backend: String },
    #[error("pool {pattern:?} cannot be edited automatically: {reason}; edit the file by hand")]
    NotEditable { pattern: String, reason: String },
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Syntax(e.to_string().trim().to_owned()))
}

/// The edited document as text. toml_edit ends every key/value line with a newline, so a file
/// without a final newline would gain one, an extra line in `git diff` and no longer the same
/// bytes after add-then-remove; keep the file's own ending. (Found by `fuzz/` target `edit`.)
fn render(doc: &DocumentMut, original: &str) -> String {
    let mut out = doc.to_string();
    if !original.is_empty() && !original.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The `[pools."PATTERN"]` table, which must be a real table (not inline or dotted).
fn pool_table<'a>(doc: &'a mut DocumentMut, pattern: &str) -> Result<&'a mut Table, EditError> {
    let not_found = || EditError::PoolNotFound {
        pattern: pattern.to_owned(),
    };
    let not_editable = |reason: &str| EditError::NotEditable {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    let pools = doc.get_mut("pools").ok_or_else(not_found)?;
    let pools = match pools {
        Item::Table(t) => t,
        Item::Value(Value::InlineTable(_)) => {
            return Err(not_editable("`pools` is an inline table"))
        }
        _ => return Err(not_found()),
    };
    match pools.get_mut(pattern).ok_or_else(not_found)? {
        Item::Table(t) => Ok(t),
        Item::Value(Value::InlineTable(_)) => Err(not_editable("the pool is an inline table")),
        _ => Err(not_found()),
    }
}

/// The address of a backend entry: a plain string, or the `addr` of an inline table.
pub fn entry_addr(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s.value()),
        Value::InlineTable(t) => t.get("addr").and_then(Value::as_str),
        _ => None,
    }
}

fn raw(s: &RawString) -> &str {
    s.as_str().unwrap_or("")
}

fn is_multiline(array: &Array) -> bool {
    raw(array.trailing()).contains('\n')
        || array.iter().any(|v| {
            prefix_of(v).contains('\n') || v.decor().suffix().map(raw).unwrap_or("").contains('\n')
        })
}

/// Without a trailing comma, the whitespace before `]` is the last element's suffix; move it to
/// the array's trailing so elements can be appended or removed after it.
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

fn prefix_of(value: &Value) -> String {
    value.decor().prefix().map(raw).unwrap_or("").to_owned()
}

/// Appends `backend` to the pool's `backends` array (creating the key if absent).
pub fn add_backend(text: &str, pattern: &str, backend: &str) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let table = pool_table(&mut doc, pattern)?;
    let Some(item) = table.get_mut("backends") else {
        let mut array = Array::new();
        array.push(backend);
        table.insert("backends", toml_edit::value(array));
        return Ok(render(&doc, text));
    };
    let Some(array) = item.as_array_mut() else {
        return Err(EditError::NotEditable {
            pattern: pattern.to_owned(),
            reason: "`backends` is not an array".to_owned(),
        });
    };
    let mut value = Value::from(backend);
    if is_multiline(array) {
        normalise_trailing(array);
        // The new element goes on its own line with the last element's indentation. Whatever
        // follows the last comma (that element's own comment, up to its newline) stays on that
        // line by becoming the new element's prefix.
        let indent = array
            .iter()
            .last()
            .map(prefix_of)
            .and_then(|p| p.rsplit_once('\n').map(|(_, indent)| indent.to_owned()))
            .unwrap_or_else(|| "  ".to_owned());
        let trailing = raw(array.trailing()).to_owned();
        let (before, after) = match trailing.rsplit_once('\n') {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (String::new(), trailing.clone()),
        };
        value.decor_mut().set_prefix(format!("{before}\n{indent}"));
        value.decor_mut().set_suffix("");
        if array.is_empty() {
            array.set_trailing_comma(true);
        }
        array.push_formatted(value);
        array.set_trailing(format!("\n{after}"));
    } else {
        let prefix = if array.is_empty() { "" } else { " " };
        value.decor_mut().set_prefix(prefix);
        value.decor_mut().set_suffix("");
        array.push_formatted(value);
    }
    Ok(render(&doc, text))
}

/// Removes the first entry of the pool's `backends` whose address satisfies `matches`.
pub fn remove_backend(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let table = pool_table(&mut doc, pattern)?;
    let not_found = || EditError::BackendNotFound {
        pattern: pattern.to_owned(),
        backend: "(matching entry)".to_owned(),
    };
    let array = table
        .get_mut("backends")
        .and_then(Item::as_array_mut)
        .ok_or_else(not_found)?;
    let index = array
        .iter()
        .position(|v| entry_addr(v).is_some_and(matches))
        .ok_or_else(not_found)?;
    let multiline = is_multiline(array);
    if multiline {
        normalise_trailing(array);
    }
    let removed_prefix = array.get(index).map(prefix_of).unwrap_or_default();
    let was_last = index + 1 == array.len();
    array.remove(index);

    if multiline {
        // Delete the element's whole line: keep what its prefix carried for the line above (the
        // previous element's comment) and drop its own comment, which sits before the newline
        // in whatever follows it.
        let keep = removed_prefix
            .rsplit_once('\n')
            .map_or(removed_prefix.as_str(), |(before, _)| before)
            .to_owned();
        let splice = |following: &str| match following.rsplit_once('\n') {
            Some((_, rest)) => format!("{keep}\n{rest}"),
            None => format!("{keep}{following}"),
        };
        if was_last {
            let trailing = splice(raw(array.trailing()));
            array.set_trailing(trailing);
            // The previous element's comma is still in the text; keep rendering it.
            array.set_trailing_comma(!array.is_empty());
        } else if let Some(next) = array.get_mut(index) {
            let prefix = splice(&prefix_of(next));
            next.decor_mut().set_prefix(prefix);
        }
    } else if index == 0 {
        if let Some(first) = array.get_mut(0) {
            first.decor_mut().set_prefix(removed_prefix);
        }
    }
    Ok(render(&doc, text))
}

/// Appends a `[pools."PATTERN"]` table with explicit keys, after one blank line.
pub fn add_pool(text: &str, pattern: &str, spec: &PoolSpec) -> Result<String, EditError> {
    let doc = parse(text)?;
    if doc
        .get("pools")
        .and_then(|p| p.as_table_like())
        .is_some_and(|p| p.contains_key(pattern))
    {
        return Err(EditError::PoolExists {
            pattern: pattern.to_owned(),
        });
    }
    let key = toml_edit::Key::new(pattern);
    let string = |s: &str| Value::from(s).to_string().trim().to_owned();
    let mut table = format!(
        "[pools.{}]\ntype = {}\ninterval = {}\nhealth_checks = [\n",
        key.display_repr(),
        string(&spec.pool_type),
        string(&spec.interval)
    );
    for check in &spec.health_checks {
        let values: Vec<String> = check.healthy_values.iter().map(|v| string(v)).collect();
        table.push_str(&format!(
            "  {{ url_path = {}, healthy_values = [{}] }},\n",
            string(&check.url_path),
            values.join(", ")
        ));
    }
    table.push_str("]\nbackends = []\n");

    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&table);
    parse(&out)?;
    Ok(out)
}

/// Removes the pool's table, the comment lines directly above its header, and the one blank
/// line before those (the one `add_pool` gave it).
pub fn remove_pool(text: &str, pattern: &str) -> Result<String, EditError> {
    let mut check = parse(text)?;
    pool_table(&mut check, pattern)?;
    let doc = toml_edit::Document::parse(text).map_err(|e| EditError::Syntax(e.to_string()))?;
    let mut headers = Vec::new();
    collect_headers(doc.as_table(), &mut headers);
    let target = doc
        .get("pools")
        .and_then(Item::as_table)
        .and_then(|p| p.get(pattern))
        .and_then(Item::as_table);
    let header = target
        .and_then(Table::span)
        .ok_or_else(|| EditError::NotEditable {
            pattern: pattern.to_owned(),
            reason: "its table has no [header] of its own".to_owned(),
        })?;
    if target.is_some_and(|t| {
        t.iter()
            .any(|(_, item)| item.is_table() || item.is_array_of_tables())
    }) {
        return Err(EditError::NotEditable {
            pattern: pattern.to_owned(),
            reason: "it has sub-tables".to_owned(),
        });
    }

    let lines: Vec<(usize, &str)> = line_starts(text);
    let line_of = |offset: usize| {
        lines
            .iter()
            .rposition(|(start, _)| *start <= offset)
            .unwrap_or(0)
    };
    let header_line = line_of(header.start);
    let next_header_line = headers
        .iter()
        .filter(|start| **start > header.start)
        .min()
        .map(|start| line_of(*start));
    let is_comment = |i: usize| lines[i].1.trim_start().starts_with('#');
    let is_blank = |i: usize| lines[i].1.trim().is_empty();

    // Start: comments directly above the header belong to this pool, then one blank line.
    let mut first = header_line;
    while first > 0 && is_comment(first - 1) {
        first -= 1;
    }
    if first > 0 && is_blank(first - 1) {
        first -= 1;
    }
    // End: up to the next header, leaving the comments directly above it (they belong to it)
    // and the blank lines before those.
    let end = match next_header_line {
        Some(mut end) => {
            while end > header_line + 1 && is_comment(end - 1) {
                end -= 1;
            }
            while end > header_line + 1 && is_blank(end - 1) {
                end -= 1;
            }
            end
        }
        None => lines.len(),
    };
    let start_byte = lines[first].0;
    let end_byte = lines.get(end).map_or(text.len(), |(start, _)| *start);
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start_byte]);
    out.push_str(&text[end_byte..]);
    parse(&out)?;
    Ok(out)
}

/// Byte offset and text (without newline) of every line.
fn line_starts(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        lines.push((start, line.trim_end_matches(['\n', '\r'])));
        start += line.len();
    }
    lines
}

/// Start offsets of every `[table]` and `[[array]]` header in the document.
fn collect_headers(table: &Table, out: &mut Vec<usize>) {
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => {
                // An implicit table (`pools` in `[pools."/"]`) has no header line of its own.
                if let Some(span) = t.span().filter(|_| !t.is_implicit()) {
                    out.push(span.start);
                }
                collect_headers(t, out);
            }
            Item::ArrayOfTables(tables) => {
                for t in tables.iter() {
                    if let Some(span) = t.span() {
                        out.push(span.start);
                    }
                    collect_headers(t, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
