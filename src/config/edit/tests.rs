use super::*;

const FILE: &str = r#"# lb.toml
[listen]
http = "0.0.0.0:8080"
grpc = "127.0.0.1:8081"

# the main pool
[pools."/"]
type = "p2c"
interval = "10s"
health_checks = [
  { url_path = "/healthz", healthy_values = ["ok", "OK"] },
]
backends = [
  "127.0.0.1:8082",   # comment kept
  "127.0.0.1:8083",
]

[pools."/api/"]
backends = ["127.0.0.1:9000/v1/"]
"#;

fn is(addr: &'static str) -> impl Fn(&str) -> bool {
    move |entry| entry == addr
}

fn spec() -> PoolSpec {
    PoolSpec {
        pool_type: "p2c".into(),
        interval: "10s".into(),
        health_checks: vec![HealthCheckSpec {
            url_path: "/healthz".into(),
            healthy_values: vec!["ok".into(), "OK".into()],
        }],
    }
}

/// The lines `git diff` would show as removed and added: what lies between the common leading
/// and trailing lines.
fn line_diff<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let old: Vec<&str> = old.split_inclusive('\n').collect();
    let new: Vec<&str> = new.split_inclusive('\n').collect();
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let max_tail = old.len().min(new.len()) - head;
    let tail = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(max_tail)
        .take_while(|(a, b)| a == b)
        .count();
    (
        old[head..old.len() - tail].to_vec(),
        new[head..new.len() - tail].to_vec(),
    )
}

fn pool(pattern: &str, backends: &str) -> String {
    format!(
        "[pools.{}]\nbackends = {backends}\n",
        Key::new(pattern).display_repr()
    )
}

// === add_backend ===

#[test]
fn add_backend_to_a_multiline_array_adds_one_line() {
    let out = add_backend(FILE, "/", "127.0.0.1:8084").unwrap();
    let expected = FILE.replace(
        "  \"127.0.0.1:8083\",\n]",
        "  \"127.0.0.1:8083\",\n  \"127.0.0.1:8084\",\n]",
    );
    assert_eq!(out, expected);
    assert_eq!(
        line_diff(FILE, &out),
        (vec![], vec!["  \"127.0.0.1:8084\",\n"])
    );
}

#[test]
fn add_backend_keeps_a_comment_on_the_last_element() {
    let text = "[pools.\"/\"]\nbackends = [\n    \"a:1\", # last\n]\n";
    let out = add_backend(text, "/", "127.0.0.1:2").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\nbackends = [\n    \"a:1\", # last\n    \"127.0.0.1:2\",\n]\n"
    );
    assert_eq!(remove_backend(&out, "/", &is("127.0.0.1:2")).unwrap(), text);
}

#[test]
fn add_backend_goes_after_comment_lines_at_the_end_of_the_array() {
    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n  # \"b:2\", parked\n]\n";
    let out = add_backend(text, "/", "c:3").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n  # \"b:2\", parked\n  \"c:3\",\n]\n"
    );
    assert_eq!(remove_backend(&out, "/", &is("c:3")).unwrap(), text);
}

#[test]
fn add_backend_inline_and_empty_arrays() {
    let out = add_backend(FILE, "/api/", "127.0.0.1:9001").unwrap();
    assert_eq!(
        out,
        FILE.replace(
            "backends = [\"127.0.0.1:9000/v1/\"]\n",
            "backends = [\"127.0.0.1:9000/v1/\", \"127.0.0.1:9001\"]\n"
        )
    );
    let cases = [
        ("[]", "[\"a:1\"]"),
        ("[ ]", "[ \"a:1\" ]"),
        ("[\"b:2\"]", "[\"b:2\", \"a:1\"]"),
        ("[ \"b:2\" ]", "[ \"b:2\", \"a:1\" ]"),
        ("[\"b:2\",]", "[\"b:2\", \"a:1\",]"),
    ];
    for (before, after) in cases {
        let text = pool("/", before);
        let out = add_backend(&text, "/", "a:1").unwrap();
        assert_eq!(out, pool("/", after), "from {before}");
        assert_eq!(
            remove_backend(&out, "/", &is("a:1")).unwrap(),
            text,
            "from {before}"
        );
    }
}

#[test]
fn add_backend_to_an_empty_multiline_array() {
    let text = pool("/", "[\n]");
    let out = add_backend(&text, "/", "a:1").unwrap();
    assert_eq!(out, pool("/", "[\n  \"a:1\",\n]"));
    assert_eq!(remove_backend(&out, "/", &is("a:1")).unwrap(), text);

    // The indentation of a comment inside the empty array is the best guess.
    let text = pool("/", "[ # later\n    # none yet\n]");
    let out = add_backend(&text, "/", "a:1").unwrap();
    assert_eq!(out, pool("/", "[ # later\n    # none yet\n    \"a:1\",\n]"));
    assert_eq!(remove_backend(&out, "/", &is("a:1")).unwrap(), text);
}

#[test]
fn add_backend_without_a_trailing_comma_keeps_that_style() {
    let text = pool("/", "[\n  \"a:1\"  # c\n]");
    let out = add_backend(&text, "/", "b:2").unwrap();
    assert_eq!(out, pool("/", "[\n  \"a:1\",  # c\n  \"b:2\"\n]"));
    // The one exception to add-then-remove being byte-identical: removal is a one-line diff, so
    // the comma added to "a:1" stays.
    assert_eq!(
        remove_backend(&out, "/", &is("b:2")).unwrap(),
        pool("/", "[\n  \"a:1\",  # c\n]")
    );
}

#[test]
fn add_backend_with_a_hanging_bracket_keeps_it_there() {
    let text = pool("/", "[\"a:1\",\n            \"c:3\"]");
    let out = add_backend(&text, "/", "b:2").unwrap();
    assert_eq!(
        out,
        pool("/", "[\"a:1\",\n            \"c:3\",\n            \"b:2\"]")
    );
    assert_eq!(remove_backend(&out, "/", &is("b:2")).unwrap(), text);
}

#[test]
fn add_backend_takes_the_indentation_of_the_last_line_start() {
    let text = pool("/", "[\n    \"a:1\", \"c:3\",\n]");
    let out = add_backend(&text, "/", "b:2").unwrap();
    assert_eq!(out, pool("/", "[\n    \"a:1\", \"c:3\",\n    \"b:2\",\n]"));
    assert_eq!(remove_backend(&out, "/", &is("b:2")).unwrap(), text);
}

#[test]
fn add_backend_without_a_backends_key_inserts_one_line() {
    let text = "[pools.\"/\"]\ninterval = \"1s\"\n\n[pools.\"/b/\"]\n";
    let out = add_backend(text, "/", "127.0.0.1:1").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\ninterval = \"1s\"\nbackends = [\"127.0.0.1:1\"]\n\n[pools.\"/b/\"]\n"
    );
    assert_eq!(
        line_diff(text, &out),
        (vec![], vec!["backends = [\"127.0.0.1:1\"]\n"])
    );

    // Indented keys, a trailing comment, no keys at all, the last table in the file.
    let cases = [
        (
            "[pools.\"/\"]\n  interval = \"1s\" # why\n\n[x]\n",
            "[pools.\"/\"]\n  interval = \"1s\" # why\n  backends = [\"a:1\"]\n\n[x]\n",
        ),
        (
            "[pools.\"/\"]\n# nothing yet\n\n[x]\n",
            "[pools.\"/\"]\nbackends = [\"a:1\"]\n# nothing yet\n\n[x]\n",
        ),
        (
            "[x]\n\n[pools.\"/\"]\ninterval = \"1s\"\n",
            "[x]\n\n[pools.\"/\"]\ninterval = \"1s\"\nbackends = [\"a:1\"]\n",
        ),
        (
            "[pools.\"/\"]\ninterval = \"1s\"\n\n[pools.\"/\".sub]\nx = 1\n",
            "[pools.\"/\"]\ninterval = \"1s\"\nbackends = [\"a:1\"]\n\n[pools.\"/\".sub]\nx = 1\n",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(add_backend(text, "/", "a:1").unwrap(), expected);
    }
}

#[test]
fn add_backend_to_pools_written_with_dotted_keys() {
    let text = "[pools]\n\"/\".interval = \"1s\"\n\"/b/\".interval = \"1s\"\n\n[listen]\n";
    assert_eq!(
        add_backend(text, "/", "a:1").unwrap(),
        "[pools]\n\"/\".interval = \"1s\"\n\"/\".backends = [\"a:1\"]\n\"/b/\".interval = \"1s\"\n\n[listen]\n"
    );
    let text = "pools.\"/\".backends = [\n  \"b:2\",\n]\n\n[listen]\n";
    let out = add_backend(text, "/", "a:1").unwrap();
    assert_eq!(
        out,
        "pools.\"/\".backends = [\n  \"b:2\",\n  \"a:1\",\n]\n\n[listen]\n"
    );
    assert_eq!(remove_backend(&out, "/", &is("a:1")).unwrap(), text);
}

// === remove_backend ===

#[test]
fn remove_backend_deletes_its_line_and_only_its_comment() {
    let out = remove_backend(FILE, "/", &is("127.0.0.1:8082")).unwrap();
    assert_eq!(
        out,
        FILE.replace("  \"127.0.0.1:8082\",   # comment kept\n", "")
    );
    assert_eq!(
        line_diff(FILE, &out),
        (vec!["  \"127.0.0.1:8082\",   # comment kept\n"], vec![])
    );
    let out = remove_backend(FILE, "/", &is("127.0.0.1:8083")).unwrap();
    assert_eq!(out, FILE.replace("  \"127.0.0.1:8083\",\n", ""));
}

#[test]
fn remove_backend_keeps_comment_lines_around_it() {
    let text = pool(
        "/",
        "[\n  # canaries\n  \"a:1\", # a\n  # about c\n  \"c:3\",\n  # end\n]",
    );
    assert_eq!(
        remove_backend(&text, "/", &is("a:1")).unwrap(),
        pool("/", "[\n  # canaries\n  # about c\n  \"c:3\",\n  # end\n]")
    );
    assert_eq!(
        remove_backend(&text, "/", &is("c:3")).unwrap(),
        pool(
            "/",
            "[\n  # canaries\n  \"a:1\", # a\n  # about c\n  # end\n]"
        )
    );
}

#[test]
fn remove_backend_from_a_shared_line() {
    let text = pool("/", "[\n  \"a:1\", \"b:2\", # ab\n  \"c:3\",\n]");
    assert_eq!(
        remove_backend(&text, "/", &is("b:2")).unwrap(),
        pool("/", "[\n  \"a:1\", # ab\n  \"c:3\",\n]")
    );
    assert_eq!(
        remove_backend(&text, "/", &is("a:1")).unwrap(),
        pool("/", "[\n  \"b:2\", # ab\n  \"c:3\",\n]")
    );
}

#[test]
fn remove_backend_from_inline_arrays() {
    let cases = [
        ("[\"a:1\", \"b:2\", \"c:3\"]", "b:2", "[\"a:1\", \"c:3\"]"),
        ("[\"a:1\", \"b:2\", \"c:3\"]", "a:1", "[\"b:2\", \"c:3\"]"),
        ("[\"a:1\", \"b:2\", \"c:3\"]", "c:3", "[\"a:1\", \"b:2\"]"),
        ("[ \"a:1\" ]", "a:1", "[ ]"),
        ("[\"a:1\"]", "a:1", "[]"),
    ];
    for (before, addr, after) in cases {
        let text = pool("/", before);
        assert_eq!(
            remove_backend(&text, "/", &|e: &str| e == addr).unwrap(),
            pool("/", after),
            "{addr} from {before}"
        );
    }
}

#[test]
fn add_then_remove_is_byte_identical() {
    for (pattern, backend) in [("/", "127.0.0.1:9999"), ("/api/", "[::1]:80/x")] {
        let added = add_backend(FILE, pattern, backend).unwrap();
        assert_ne!(added, FILE);
        assert_eq!(remove_backend(&added, pattern, &is(backend)).unwrap(), FILE);
    }
}

#[test]
fn removing_every_element_of_a_multiline_array_leaves_brackets_on_their_lines() {
    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n]\n";
    let out = remove_backend(text, "/", &is("a:1")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n]\n");
    assert_eq!(add_backend(&out, "/", "a:1").unwrap(), text);
}

#[test]
fn removing_the_last_element_without_a_trailing_comma_is_still_one_line() {
    // The previous element keeps its comma, now a trailing one: one removed line, as the spec
    // asks, rather than restoring the comma-less style (which would touch two lines).
    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n  \"b:2\"\n]\n";
    let out = remove_backend(text, "/", &is("b:2")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n]\n");
    assert_eq!(line_diff(text, &out), (vec!["  \"b:2\"\n"], vec![]));
}

#[test]
fn inline_table_entries_match_on_addr() {
    let text =
        "[pools.\"/\"]\nbackends = [\n  { addr = \"a:1\", state = \"drain\" },\n  \"b:2\",\n]\n";
    let out = remove_backend(text, "/", &is("a:1")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n  \"b:2\",\n]\n");
}

// === Line endings and the end of the file ===

#[test]
fn crlf_files_stay_crlf() {
    let text = FILE.replace('\n', "\r\n");
    let out = add_backend(&text, "/", "127.0.0.1:8084").unwrap();
    assert_eq!(
        out,
        text.replace(
            "  \"127.0.0.1:8083\",\r\n]",
            "  \"127.0.0.1:8083\",\r\n  \"127.0.0.1:8084\",\r\n]"
        )
    );
    assert_eq!(
        remove_backend(&out, "/", &is("127.0.0.1:8084")).unwrap(),
        text
    );
    let out = add_backend(&text, "/api/", "a:1").unwrap();
    assert_eq!(remove_backend(&out, "/api/", &is("a:1")).unwrap(), text);

    let with_pool = add_pool(&text, "/new/", &spec()).unwrap();
    assert!(with_pool.starts_with(&text));
    assert!(
        !with_pool.replace("\r\n", "").contains('\n'),
        "{with_pool:?}"
    );
    assert_eq!(remove_pool(&with_pool, "/new/").unwrap(), text);
}

#[test]
fn mixed_line_endings_are_refused_rather_than_normalised() {
    let text = "[pools.\"/\"]\r\nbackends = [\n  \"a:1\",\n]\r\nx = 1\n";
    assert!(matches!(
        add_backend(text, "/", "b:2"),
        Err(EditError::NotEditable { .. })
    ));
}

#[test]
fn a_missing_final_newline_stays_missing() {
    let text = "[pools.\"/\"]\nbackends = [\"a:1\"] # c";
    let out = add_backend(text, "/", "b:2").unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\"a:1\", \"b:2\"] # c");
    assert_eq!(remove_backend(&out, "/", &is("b:2")).unwrap(), text);

    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n]";
    let out = add_backend(text, "/", "b:2").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n  \"b:2\",\n]"
    );
    assert_eq!(remove_backend(&out, "/", &is("b:2")).unwrap(), text);
}

// === add_pool / remove_pool ===

#[test]
fn add_pool_appends_and_remove_pool_restores() {
    let out = add_pool(FILE, "GET example.com/{id}", &spec()).unwrap();
    assert!(out.starts_with(FILE));
    assert_eq!(
        &out[FILE.len()..],
        "\n[pools.\"GET example.com/{id}\"]\ntype = \"p2c\"\ninterval = \"10s\"\nhealth_checks = [\n  { url_path = \"/healthz\", healthy_values = [\"ok\", \"OK\"] },\n]\nbackends = []\n"
    );
    assert_eq!(remove_pool(&out, "GET example.com/{id}").unwrap(), FILE);
}

#[test]
fn add_pool_adds_one_blank_line_of_its_own() {
    let table =
        "[pools.\"/\"]\ntype = \"p2c\"\ninterval = \"10s\"\nhealth_checks = []\nbackends = []\n";
    let spec = PoolSpec {
        health_checks: Vec::new(),
        ..spec()
    };
    // (file, what precedes the new table, what remove_pool gives back)
    let cases = [
        ("", "", ""),
        (
            "[listen]\nhttp = \"0.0.0.0:1\"",
            "[listen]\nhttp = \"0.0.0.0:1\"\n\n",
            // The newline the file lacked stays added.
            "[listen]\nhttp = \"0.0.0.0:1\"\n",
        ),
        (
            "[listen]\nhttp = \"0.0.0.0:1\"\n",
            "[listen]\nhttp = \"0.0.0.0:1\"\n\n",
            "[listen]\nhttp = \"0.0.0.0:1\"\n",
        ),
        (
            // The file's own blank line stays and ours follows: remove_pool takes one back.
            "[listen]\nhttp = \"0.0.0.0:1\"\n\n",
            "[listen]\nhttp = \"0.0.0.0:1\"\n\n\n",
            "[listen]\nhttp = \"0.0.0.0:1\"\n\n",
        ),
        (
            "# only a comment",
            "# only a comment\n\n",
            "# only a comment\n",
        ),
    ];
    for (text, head, removed) in cases {
        let out = add_pool(text, "/", &spec).unwrap();
        assert_eq!(out, format!("{head}{table}"), "from {text:?}");
        assert_eq!(remove_pool(&out, "/").unwrap(), removed, "from {text:?}");
    }
}

#[test]
fn add_pool_quotes_any_pattern() {
    let patterns = [
        "/z/",
        "GET example.com/api/{id}",
        "/{path...}",
        "/it's/",
        "/say \"hi\"/",
        "/back\\slash/",
        "/tab\there/",
        "/ünïcode/",
    ];
    for pattern in patterns {
        let out = add_pool(FILE, pattern, &spec()).unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        assert!(
            doc["pools"].as_table().unwrap().contains_key(pattern),
            "{pattern}: {out}"
        );
        assert!(toml::from_str::<toml::Table>(&out).is_ok(), "{pattern}");
        assert_eq!(remove_pool(&out, pattern).unwrap(), FILE, "{pattern}");
    }
}

#[test]
fn add_pool_next_to_dotted_and_inline_pools() {
    let text = "pools.\"/\".backends = []\n";
    let out = add_pool(text, "/x/", &spec()).unwrap();
    assert!(out.starts_with("pools.\"/\".backends = []\n\n[pools.\"/x/\"]\n"));
    let parsed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(parsed["pools"].as_table().unwrap().len(), 2);

    let inline = "pools = { \"/\" = { backends = [] } }\n";
    assert!(matches!(
        add_pool(inline, "/x/", &spec()),
        Err(EditError::NotEditable { .. })
    ));
    assert!(matches!(
        add_pool(inline, "/", &spec()),
        Err(EditError::PoolExists { .. })
    ));
}

#[test]
fn remove_pool_takes_its_comments_and_leaves_the_next_tables() {
    let out = remove_pool(FILE, "/").unwrap();
    assert_eq!(
        out,
        "# lb.toml\n[listen]\nhttp = \"0.0.0.0:8080\"\ngrpc = \"127.0.0.1:8081\"\n\n[pools.\"/api/\"]\nbackends = [\"127.0.0.1:9000/v1/\"]\n"
    );
    let out = remove_pool(FILE, "/api/").unwrap();
    assert_eq!(
        out,
        FILE.replace(
            "\n[pools.\"/api/\"]\nbackends = [\"127.0.0.1:9000/v1/\"]\n",
            ""
        )
    );
}

#[test]
fn remove_pool_leaves_the_comments_of_the_next_table() {
    let text = "[listen]\nx = 1\n\n[pools.\"/\"]\nb = []\n# still about /\n\n# about api\n[pools.\"/api/\"]\nb = []\n";
    assert_eq!(
        remove_pool(text, "/").unwrap(),
        "[listen]\nx = 1\n\n# about api\n[pools.\"/api/\"]\nb = []\n"
    );
}

#[test]
fn remove_pool_takes_its_sub_tables_wherever_they_are() {
    let text = "[listen]\nx = 1\n\n[pools.\"/\"]\nb = []\n\n[pools.\"/\".sub]\nx = 1\n\n[[pools.\"/\".arr]]\ny = 1\n\n# api\n[pools.\"/api/\"]\nb = []\n\n# sub, far away\n[pools.\"/\".late]\nz = 1\n";
    assert_eq!(
        remove_pool(text, "/").unwrap(),
        "[listen]\nx = 1\n\n# api\n[pools.\"/api/\"]\nb = []\n"
    );
    // A pool made only of sub-tables has no header of its own, but its sub-tables go.
    let text = "[listen]\nx = 1\n\n[pools.\"/\".sub]\nx = 1\n";
    assert_eq!(remove_pool(text, "/").unwrap(), "[listen]\nx = 1\n");
}

#[test]
fn remove_pool_at_the_top_keeps_the_preamble_and_takes_the_blank_line_below() {
    let cases = [
        ("[pools.\"/\"]\nx = 1\n\n[listen]\n", "[listen]\n"),
        (
            "# lb.toml\n[pools.\"/\"]\nx = 1\n\n[listen]\n",
            "# lb.toml\n[listen]\n",
        ),
        (
            "# lb.toml\n\n[pools.\"/\"]\nx = 1\n\n[listen]\n",
            "# lb.toml\n\n[listen]\n",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(remove_pool(text, "/").unwrap(), expected, "from {text:?}");
    }
}

#[test]
fn remove_pool_does_not_mistake_string_lines_for_comments() {
    let text = "[x]\nnote = \"\"\"\n# not a comment\"\"\"\n[pools.\"/\"]\nb = []\n";
    assert_eq!(
        remove_pool(text, "/").unwrap(),
        "[x]\nnote = \"\"\"\n# not a comment\"\"\"\n"
    );
}

#[test]
fn remove_pool_refuses_dotted_and_inline_pools() {
    for text in [
        "[pools]\n\"/\".interval = \"1s\"\n\"/\".backends = []\n\"/b/\".backends = []\n",
        "pools.\"/\".backends = []\n",
        "[pools]\n\"/\" = { backends = [] }\n",
        "pools = { \"/\" = { backends = [] } }\n",
    ] {
        assert!(
            matches!(remove_pool(text, "/"), Err(EditError::NotEditable { .. })),
            "{text}"
        );
    }
}

// === Errors ===

#[test]
fn missing_pools_and_bad_input_are_errors_not_panics() {
    assert!(matches!(
        add_backend(FILE, "/nope/", "a:1"),
        Err(EditError::PoolNotFound { .. })
    ));
    assert!(matches!(
        remove_pool(FILE, "/nope/"),
        Err(EditError::PoolNotFound { .. })
    ));
    assert!(matches!(
        add_pool(FILE, "/", &spec()),
        Err(EditError::PoolExists { .. })
    ));
    assert!(matches!(
        remove_backend(FILE, "/", &is("x:1")),
        Err(EditError::BackendNotFound { .. })
    ));
    assert!(matches!(
        add_backend("[[[", "/", "a:1"),
        Err(EditError::Syntax(_))
    ));
    for text in [
        "pools = { \"/\" = { backends = [] } }\n",
        "[pools]\n\"/\" = { backends = [] }\n",
        "[pools.\"/\"]\nbackends = \"a:1\"\n",
        "[pools.\"/\".sub]\nx = 1\n",
    ] {
        let error = add_backend(text, "/", "a:1").unwrap_err();
        assert!(
            matches!(error, EditError::NotEditable { .. }),
            "{text}: {error}"
        );
        assert!(!error.to_string().ends_with('.'), "{error}");
    }
}

#[test]
fn no_input_makes_an_edit_panic_or_write_invalid_toml() {
    // Every prefix of a file, cut anywhere: each edit either fails or yields valid TOML.
    let text = format!("{FILE}\n[pools.\"/x/\"]\nbackends = [ # b\n  \"c:1\"\n  ]\r\n");
    let cuts = (0..=text.len()).filter(|i| text.is_char_boundary(*i));
    for cut in cuts {
        let text = &text[..cut];
        let outputs = [
            add_backend(text, "/", "a:1"),
            add_backend(text, "/x/", "a:1"),
            remove_backend(text, "/", &is("127.0.0.1:8083")),
            remove_backend(text, "/x/", &is("c:1")),
            add_pool(text, "/new/", &spec()),
            remove_pool(text, "/"),
            remove_pool(text, "/x/"),
        ];
        for out in outputs.into_iter().flatten() {
            assert!(out.parse::<DocumentMut>().is_ok(), "{text:?} -> {out:?}");
        }
    }
}

#[test]
fn drain_and_enable_are_one_line_edits_and_reversible() {
    let drained = set_backend_state(FILE, "/", &is("127.0.0.1:8082"), "drain").unwrap();
    assert_eq!(
        drained,
        FILE.replace(
            "  \"127.0.0.1:8082\",   # comment kept",
            "  { addr = \"127.0.0.1:8082\", state = \"drain\" },   # comment kept"
        )
    );
    let disabled = set_backend_state(&drained, "/", &is("127.0.0.1:8082"), "disabled").unwrap();
    assert!(
        disabled.contains("{ addr = \"127.0.0.1:8082\", state = \"disabled\" },   # comment kept")
    );
    assert_eq!(
        set_backend_state(&disabled, "/", &is("127.0.0.1:8082"), "enabled").unwrap(),
        FILE
    );
    let inline = set_backend_state(FILE, "/api/", &is("127.0.0.1:9000/v1/"), "drain").unwrap();
    assert!(
        inline.contains("backends = [{ addr = \"127.0.0.1:9000/v1/\", state = \"drain\" }]"),
        "{inline}"
    );
}

/// Found by the `edit` fuzz target: a file without a final newline gained one on every edit.
#[test]
fn a_file_without_a_final_newline_keeps_its_ending() {
    let text = "[pools.\"/\"]\nbackends = [\n    \"127.0.0.1:1\", # last\n]";
    let out = add_backend(text, "/", "127.0.0.1:9").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\nbackends = [\n    \"127.0.0.1:1\", # last\n    \"127.0.0.1:9\",\n]"
    );
    assert_eq!(remove_backend(&out, "/", &is("127.0.0.1:9")).unwrap(), text);

    let text = "[pools.\"/\"]\ninterval = \"1s\"";
    let out = add_backend(text, "/", "127.0.0.1:1").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\ninterval = \"1s\"\nbackends = [\"127.0.0.1:1\"]"
    );
}

/// Found by the `edit` fuzz target: a file holding only blank lines lost one on add-then-remove.
#[test]
fn add_then_remove_pool_restores_a_whitespace_only_file() {
    for text in ["\n", "\n\n", "  \n"] {
        let added = add_pool(text, "/", &spec()).unwrap();
        assert_eq!(remove_pool(&added, "/").unwrap(), text, "{text:?}");
    }
}

/// The in-place array edit (LF text) gives the whole-document edit's result (reached here
/// through a CRLF copy of the same file), reports the array's span, and changes nothing else.
#[test]
fn in_place_backend_edits_equal_whole_document_edits() {
    let crlf = FILE.replace('\n', "\r\n");
    let lf = |s: String| s.replace("\r\n", "\n");
    let cases: Vec<(Edited, String)> = vec![
        (
            add_backend_edit(FILE, "/", "10.0.0.1:1", None).unwrap(),
            lf(add_backend(&crlf, "/", "10.0.0.1:1").unwrap()),
        ),
        (
            add_backend_edit(FILE, "/api/", "10.0.0.1:1", None).unwrap(),
            lf(add_backend(&crlf, "/api/", "10.0.0.1:1").unwrap()),
        ),
        (
            remove_backend_edit(FILE, "/", &is("127.0.0.1:8082"), None).unwrap(),
            lf(remove_backend(&crlf, "/", &is("127.0.0.1:8082")).unwrap()),
        ),
        (
            set_backend_state_edit(FILE, "/", &is("127.0.0.1:8083"), "drain", None).unwrap(),
            lf(set_backend_state(&crlf, "/", &is("127.0.0.1:8083"), "drain").unwrap()),
        ),
    ];
    for (edited, whole) in cases {
        assert_eq!(edited.text, whole);
        let span = edited.backends.expect("an in-place edit");
        assert!(FILE[span.clone()].starts_with('[') && FILE[span.clone()].ends_with(']'));
        assert!(edited.text.starts_with(&FILE[..span.start]));
        assert!(edited.text.ends_with(&FILE[span.end..]));
    }
    // A CRLF file, or a pool without `backends`, goes through the whole document: no span.
    assert_eq!(
        add_backend_edit(&crlf, "/", "10.0.0.1:1", None)
            .unwrap()
            .backends,
        None
    );
    let bare = "[pools.\"/\"]\ninterval = \"1s\"\n";
    assert_eq!(
        add_backend_edit(bare, "/", "10.0.0.1:1", None)
            .unwrap()
            .backends,
        None
    );
}

/// A recorded span of the pool's array gives the same edit as finding it by parsing; a span
/// that does not read as `backends = [ … ]` is ignored and the document parsed, as without one.
#[test]
fn a_known_array_span_gives_the_parsed_edit_and_a_wrong_one_is_ignored() {
    let (config, spans) = crate::config::parse_with_spans(FILE).unwrap();
    for (pool, span) in config.pools.iter().zip(&spans) {
        let Some(span) = span.clone() else { continue };
        let pattern = pool.pattern.as_str();
        let wrong = [
            None,
            Some(span.start + 1..span.end),
            Some(span.start..span.end - 1),
            Some(0..FILE.len()),
            Some(span.start..FILE.len() + 1),
        ];
        let parsed = add_backend_edit(FILE, pattern, "10.0.0.1:1", None).unwrap();
        assert_eq!(parsed.backends, Some(span.clone()), "{pattern}");
        let known = add_backend_edit(FILE, pattern, "10.0.0.1:1", Some(span.clone())).unwrap();
        assert_eq!(known, parsed, "{pattern}");
        for w in &wrong {
            assert_eq!(
                add_backend_edit(FILE, pattern, "10.0.0.1:1", w.clone()).unwrap(),
                parsed,
                "{pattern} {w:?}"
            );
        }
        let Some(first) = pool.backends.first() else {
            continue;
        };
        let first: &'static str = Box::leak(first.addr.to_string().into_boxed_str());
        let parsed = remove_backend_edit(FILE, pattern, &is(first), None).unwrap();
        let known = remove_backend_edit(FILE, pattern, &is(first), Some(span.clone())).unwrap();
        assert_eq!(known, parsed, "{pattern}");
        let parsed = set_backend_state_edit(FILE, pattern, &is(first), "drain", None).unwrap();
        let known =
            set_backend_state_edit(FILE, pattern, &is(first), "drain", Some(span.clone())).unwrap();
        assert_eq!(known, parsed, "{pattern}");
        for w in &wrong {
            assert_eq!(
                set_backend_state_edit(FILE, pattern, &is(first), "drain", w.clone()).unwrap(),
                parsed,
                "{pattern} {w:?}"
            );
        }
    }
}
