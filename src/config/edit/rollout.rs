//! config::edit::rollout: the edits of a pool's `[pools."P".canary]` and
//! `[pools."P".rollout]` tables that canary and rollout changes make — a weight, progress keys,
//! the canary's backends drained or promoted — each as one edit of the document, so one
//! transition is one write and one commit. Keys that exist keep their line, indentation and
//! comment (only the value changes); new keys go after the table's last key; a new table goes
//! right after the pool's last table. Like the rest of `edit`, it never validates meaning.

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

use super::{entry_addr, find_pool_mut, parse, quoted, with_line_endings, EditError};

/// One change to a pool's canary and rollout tables, made together.
#[derive(Debug, Clone, Default)]
pub struct RolloutEdit {
    /// Declare the canary with these backends (addresses as the file spells them), replacing
    /// the canary's `backends` when it has some; the table is created when missing.
    pub canary_backends: Option<Vec<String>>,
    /// The canary's new `weight`.
    pub canary_weight: Option<u8>,
    /// Every canary backend's entry gets this admin state (`"drain"`, `"enabled"`).
    pub canary_state: Option<&'static str>,
    /// The rollout table's keys to set (created with the table when missing), in this order.
    pub set: Vec<(&'static str, Value)>,
    /// The rollout table's keys to remove.
    pub remove: Vec<&'static str>,
    /// The canary's backends become the pool's `backends` (all enabled) and the canary table
    /// goes: what a promotion writes.
    pub promote: bool,
}

/// Applies `change` to the pool's tables in `text`.
pub fn edit_rollout(text: &str, pattern: &str, change: &RolloutEdit) -> Result<String, EditError> {
    with_line_endings(text, |text| {
        let mut doc: DocumentMut = parse(text)?.into_mut();
        let pool = find_pool_mut(&mut doc, pattern)?;
        if change.canary_backends.is_some()
            || change.canary_weight.is_some()
            || change.canary_state.is_some()
        {
            let canary = sub_table(pool, "canary", pattern)?;
            if let Some(backends) = &change.canary_backends {
                let entries = backends.iter().map(|b| Value::from(b.as_str()));
                set_key(canary, "backends", Value::Array(array_like(None, entries)));
            }
            if let Some(weight) = change.canary_weight {
                set_key(canary, "weight", Value::from(i64::from(weight)));
            }
            if let Some(state) = change.canary_state {
                let array = canary
                    .get_mut("backends")
                    .and_then(Item::as_array_mut)
                    .ok_or_else(|| {
                        EditError::not_editable(pattern, "the canary's `backends` is not an array")
                    })?;
                for entry in array.iter_mut() {
                    *entry = with_state(entry, state)?;
                }
            }
        }
        if change.promote {
            promote(pool, pattern)?;
        }
        if !change.set.is_empty() || !change.remove.is_empty() {
            let rollout = sub_table(pool, "rollout", pattern)?;
            for key in &change.remove {
                rollout.remove(key);
            }
            for (key, value) in &change.set {
                set_key(rollout, key, value.clone());
            }
        }
        let mut out = doc.to_string();
        if !text.ends_with('\n') && out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    })
}

/// Sets the admin state of the first canary backend entry that `matches`, in place (one line
/// changes, as for the pool's own backends).
pub fn set_canary_backend_state(
    text: &str,
    pattern: &str,
    matches: &dyn Fn(&str) -> bool,
    state: &str,
) -> Result<String, EditError> {
    with_line_endings(text, |text| {
        let mut doc: DocumentMut = parse(text)?.into_mut();
        let pool = find_pool_mut(&mut doc, pattern)?;
        let entry = pool
            .get_mut("canary")
            .and_then(Item::as_table_like_mut)
            .and_then(|canary| canary.get_mut("backends"))
            .and_then(Item::as_array_mut)
            .and_then(|array| {
                array
                    .iter_mut()
                    .find(|v| entry_addr(v).is_some_and(matches))
            })
            .ok_or_else(|| EditError::no_matching_backend(pattern))?;
        *entry = with_state(entry, state)?;
        let mut out = doc.to_string();
        if !text.ends_with('\n') && out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    })
}

/// The backend entry `entry` with admin state `state`, keeping its decor: `enabled` is the
/// plain `"IP:PORT"` string, anything else `{ addr = "IP:PORT", state = "..." }`.
pub(super) fn with_state(entry: &Value, state: &str) -> Result<Value, EditError> {
    let addr = entry_addr(entry).unwrap_or_default().to_owned();
    let mut replacement: Value = if state == "enabled" {
        Value::from(addr.as_str())
    } else {
        format!("{{ addr = {}, state = {} }}", quoted(&addr), quoted(state))
            .parse()
            .map_err(|e: toml_edit::TomlError| EditError::Syntax(e.to_string()))?
    };
    *replacement.decor_mut() = entry.decor().clone();
    Ok(replacement)
}

/// The pool's sub-table `name` (`[pools."P".name]`, or an inline `name = { … }`), created as
/// a table of its own right after the pool's last one when missing.
fn sub_table<'a>(
    pool: &'a mut Table,
    name: &str,
    pattern: &str,
) -> Result<&'a mut dyn TableLike, EditError> {
    if !pool.contains_key(name) {
        let mut table = Table::new();
        // No position: toml_edit renders it right after the last table before it in the
        // pool's order, i.e. after the pool's own tables.
        table.decor_mut().set_prefix("\n");
        pool.insert(name, Item::Table(table));
    }
    pool.get_mut(name)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::not_editable(pattern, format!("`{name}` is not a table")))
}

/// Sets `key` to `value`: in place when it exists (its line, indentation and comment kept),
/// else after the table's last key.
fn set_key(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// The canary's backends, enabled, become the pool's `backends` (written in the style of the
/// array they replace: one per line when it was multi-line), and the canary table goes.
fn promote(pool: &mut Table, pattern: &str) -> Result<(), EditError> {
    let canary = pool
        .get("canary")
        .and_then(Item::as_table_like)
        .ok_or_else(|| EditError::not_editable(pattern, "the pool has no canary to promote"))?;
    let addrs: Vec<Value> = canary
        .get("backends")
        .and_then(Item::as_array)
        .map(|array| {
            array
                .iter()
                .filter_map(entry_addr)
                .map(Value::from)
                .collect()
        })
        .unwrap_or_default();
    let old = pool.get("backends").and_then(Item::as_array).cloned();
    let array = array_like(old.as_ref(), addrs.into_iter());
    match pool.get_mut("backends") {
        Some(Item::Value(value)) => {
            let decor = value.decor().clone();
            *value = Value::Array(array);
            *value.decor_mut() = decor;
        }
        _ => {
            pool.insert("backends", toml_edit::value(array));
        }
    }
    pool.remove("canary");
    Ok(())
}

/// An array of `entries` laid out as `like` is: one element per line with its indentation and
/// a trailing comma when `like` is multi-line, else inline.
fn array_like(like: Option<&Array>, entries: impl Iterator<Item = Value>) -> Array {
    let multiline = like.is_some_and(super::is_multiline);
    let mut array = Array::new();
    if multiline {
        let indent = like.map(super::element_indent).unwrap_or_default();
        for mut entry in entries {
            entry.decor_mut().set_prefix(format!("\n{indent}"));
            entry.decor_mut().set_suffix("");
            array.push_formatted(entry);
        }
        array.set_trailing_comma(true);
        array.set_trailing("\n");
    } else {
        for entry in entries {
            array.push(entry);
        }
    }
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[listen]
http = "127.0.0.1:0"

# the site
[pools."/"]
backends = [
  "127.0.0.1:1", # one
  "127.0.0.1:2",
]

[pools."/".canary]
backends = ["127.0.0.1:3"]
weight = 5 # first step

[pools."/api/"]
backends = ["127.0.0.1:4"]
"#;

    fn changed_lines(before: &str, after: &str) -> Vec<String> {
        let old: Vec<&str> = before.lines().collect();
        after
            .lines()
            .filter(|line| !old.contains(line))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_weight_change_is_one_line_with_its_comment_kept() {
        let change = RolloutEdit {
            canary_weight: Some(25),
            ..RolloutEdit::default()
        };
        let out = edit_rollout(FILE, "/", &change).unwrap();
        assert_eq!(changed_lines(FILE, &out), ["weight = 25 # first step"]);
        assert_eq!(out.lines().count(), FILE.lines().count());
    }

    #[test]
    fn a_new_rollout_table_goes_after_the_pool_s_canary_and_before_the_next_pool() {
        let change = RolloutEdit {
            set: vec![
                ("steps", Value::Array([5i64, 50].into_iter().collect())),
                ("state", Value::from("running")),
                ("step", Value::from(1i64)),
            ],
            ..RolloutEdit::default()
        };
        let out = edit_rollout(FILE, "/", &change).unwrap();
        let rollout = out.find("[pools.\"/\".rollout]").unwrap();
        assert!(rollout > out.find("weight = 5").unwrap());
        assert!(rollout < out.find("[pools.\"/api/\"]").unwrap());
        assert!(
            out.contains("[pools.\"/\".rollout]\nsteps = [5, 50]\nstate = \"running\"\nstep = 1\n")
        );
        crate::config::parse(&out).unwrap();
    }

    #[test]
    fn abort_drains_every_canary_backend_in_place() {
        let change = RolloutEdit {
            canary_weight: Some(0),
            canary_state: Some("drain"),
            ..RolloutEdit::default()
        };
        let out = edit_rollout(FILE, "/", &change).unwrap();
        assert_eq!(
            changed_lines(FILE, &out),
            [
                "backends = [{ addr = \"127.0.0.1:3\", state = \"drain\" }]",
                "weight = 0 # first step"
            ]
        );
        let config = crate::config::parse(&out).unwrap();
        let canary = config.pools[0].canary.as_ref().unwrap();
        assert_eq!(canary.backends[0].state, crate::config::AdminState::Drain);
    }

    #[test]
    fn promotion_makes_the_canary_s_backends_the_pool_s_in_its_layout() {
        let change = RolloutEdit {
            promote: true,
            ..RolloutEdit::default()
        };
        let out = edit_rollout(FILE, "/", &change).unwrap();
        assert!(
            out.contains("[pools.\"/\"]\nbackends = [\n  \"127.0.0.1:3\",\n]\n"),
            "{out}"
        );
        assert!(!out.contains("canary"));
        assert!(out.contains("[pools.\"/api/\"]\nbackends = [\"127.0.0.1:4\"]\n"));
        let config = crate::config::parse(&out).unwrap();
        assert_eq!(config.pools[0].backends.len(), 1);
    }

    #[test]
    fn a_missing_pool_is_refused_and_nothing_is_written() {
        let change = RolloutEdit {
            canary_weight: Some(1),
            ..RolloutEdit::default()
        };
        assert!(matches!(
            edit_rollout(FILE, "/nope/", &change),
            Err(EditError::PoolNotFound { .. })
        ));
    }
}
