use super::*;

const FILE: &str = r#"# lb.toml
[listen]
http = "0.0.0.0:8080"

# the main pool
[pools."/"]
interval = "10s"
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

#[test]
fn add_backend_to_a_multiline_array_adds_one_line() {
    let out = add_backend(FILE, "/", "127.0.0.1:8084").unwrap();
    let expected = FILE.replace(
        "  \"127.0.0.1:8083\",\n]",
        "  \"127.0.0.1:8083\",\n  \"127.0.0.1:8084\",\n]",
    );
    assert_eq!(out, expected);
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
fn add_backend_inline_and_empty_arrays() {
    let out = add_backend(FILE, "/api/", "127.0.0.1:9001").unwrap();
    assert!(
        out.contains("backends = [\"127.0.0.1:9000/v1/\", \"127.0.0.1:9001\"]\n"),
        "{out}"
    );
    let empty = "[pools.\"/\"]\nbackends = []\n";
    let out = add_backend(empty, "/", "127.0.0.1:1").unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n");
    assert_eq!(
        remove_backend(&out, "/", &is("127.0.0.1:1")).unwrap(),
        empty
    );
}

#[test]
fn add_backend_without_a_backends_key_inserts_one_line() {
    let text = "[pools.\"/\"]\ninterval = \"1s\"\n\n[pools.\"/b/\"]\n";
    let out = add_backend(text, "/", "127.0.0.1:1").unwrap();
    assert_eq!(
        out,
        "[pools.\"/\"]\ninterval = \"1s\"\nbackends = [\"127.0.0.1:1\"]\n\n[pools.\"/b/\"]\n"
    );
}

#[test]
fn remove_backend_deletes_its_line_and_only_its_comment() {
    let out = remove_backend(FILE, "/", &is("127.0.0.1:8082")).unwrap();
    assert_eq!(
        out,
        FILE.replace("  \"127.0.0.1:8082\",   # comment kept\n", "")
    );
    let out = remove_backend(FILE, "/", &is("127.0.0.1:8083")).unwrap();
    assert_eq!(out, FILE.replace("  \"127.0.0.1:8083\",\n", ""));
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
fn removing_every_element_of_a_multiline_array_stays_valid_and_reversible() {
    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n]\n";
    let out = remove_backend(text, "/", &is("a:1")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n]\n");
    assert_eq!(add_backend(&out, "/", "a:1").unwrap(), text);
}

#[test]
fn multiline_without_trailing_comma() {
    let text = "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n  \"b:2\"\n]\n";
    let out = remove_backend(text, "/", &is("b:2")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n  \"a:1\",\n]\n");
}

#[test]
fn inline_table_entries_match_on_addr() {
    let text =
        "[pools.\"/\"]\nbackends = [\n  { addr = \"a:1\", state = \"drain\" },\n  \"b:2\",\n]\n";
    let out = remove_backend(text, "/", &is("a:1")).unwrap();
    assert_eq!(out, "[pools.\"/\"]\nbackends = [\n  \"b:2\",\n]\n");
}

#[test]
fn add_pool_appends_and_remove_pool_restores() {
    let out = add_pool(FILE, "GET example.com/{id}", &spec()).unwrap();
    assert!(out.starts_with(FILE));
    assert_eq!(
        &out[FILE.len()..],
        "\n[pools.\"GET example.com/{id}\"]\ntype = \"p2c\"\ninterval = \"10s\"\nhealth_checks = [\n  { url_path = \"/healthz\", healthy_values = [\"ok\", \"OK\"] },\n]\nbackends = []\n"
    );
    assert_eq!(remove_pool(&out, "GET example.com/{id}").unwrap(), FILE);
    let no_newline = "[listen]\nhttp = \"0.0.0.0:1\"";
    let out = add_pool(no_newline, "/", &spec()).unwrap();
    assert!(
        out.starts_with("[listen]\nhttp = \"0.0.0.0:1\"\n\n[pools.\"/\"]\n"),
        "{out}"
    );
    assert_eq!(
        add_pool("", "/", &spec()).unwrap().lines().next(),
        Some("[pools.\"/\"]")
    );
}

#[test]
fn remove_pool_takes_its_comments_and_leaves_the_next_tables() {
    let out = remove_pool(FILE, "/").unwrap();
    assert_eq!(
        out,
        "# lb.toml\n[listen]\nhttp = \"0.0.0.0:8080\"\n\n[pools.\"/api/\"]\nbackends = [\"127.0.0.1:9000/v1/\"]\n"
    );
    let out = remove_pool(FILE, "/api/").unwrap();
    assert!(out.ends_with("  \"127.0.0.1:8083\",\n]\n"), "{out}");
    assert!(!out.contains("/api/"));
}

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
    let inline = "pools = { \"/\" = { backends = [] } }\n";
    assert!(matches!(
        add_backend(inline, "/", "a:1"),
        Err(EditError::NotEditable { .. })
    ));
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
