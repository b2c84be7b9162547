//! docs/config.md is the one lb.toml reference: every key the parser accepts is documented
//! there, and every key documented there is accepted.
//!
//! The reference's shape: a heading naming a table in brackets (`## [listen]`,
//! `## [pools."PATTERN"]`, `## [[tls.certificates]]`) sets the table; a heading without brackets
//! is the top level; each table row whose first cell starts with a backticked key documents that
//! key under the current table (`health_checks[].url_path`: a key of an array's elements).

use std::collections::BTreeSet;

/// Each path and every path it lies under (`a.b.c`: `a`, `a.b`, `a.b.c`).
fn with_parents(paths: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for path in paths {
        let mut prefix = String::new();
        for segment in path.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(segment);
            all.insert(prefix.clone());
        }
    }
    all
}

fn table_of(heading: &str) -> String {
    let Some(open) = heading.find('[') else {
        return String::new();
    };
    let close = heading.rfind(']').unwrap_or(heading.len());
    heading[open..close]
        .trim_matches(['[', ']'])
        .replace("\"PATTERN\"", "*")
}

fn documented(reference: &str) -> BTreeSet<String> {
    let mut table = String::new();
    let mut paths = Vec::new();
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            table = table_of(heading);
            if !table.is_empty() {
                paths.push(table.clone());
            }
        } else if let Some(row) = line.strip_prefix("| `") {
            let key = row.split('`').next().unwrap_or_default().replace("[]", "");
            paths.push(if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            });
        }
    }
    with_parents(paths)
}

#[test]
fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md"))
        .expect("docs/config.md is readable");
    let documented = documented(&reference);
    let accepted = with_parents(lb::config::key_paths());
    assert!(
        accepted.contains("listen.http") && accepted.contains("pools.*.backends.state"),
        "the parser's key list is incomplete: {accepted:?}"
    );
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let not_accepted: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && not_accepted.is_empty(),
        "docs/config.md is out of step with the parser\n  accepted but not documented: \
         {undocumented:?}\n  documented but not accepted: {not_accepted:?}"
    );
}

#[test]
fn the_reader_of_the_reference_sees_every_row() {
    let sample = "## Top level\n| `allow_empty` | x |\n## [pools.\"PATTERN\"]\n| `health_checks[].url_path` | y |\n";
    let paths = documented(sample);
    for path in [
        "allow_empty",
        "pools",
        "pools.*",
        "pools.*.health_checks",
        "pools.*.health_checks.url_path",
    ] {
        assert!(paths.contains(path), "{path} missing from {paths:?}");
    }
}
