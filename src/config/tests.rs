use std::ops::Range;
use std::path::{Path, PathBuf};

use super::*;

fn parse_ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|d| panic!("{text:?} should parse: {d:?}"))
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let mut config =
        parse_ok("[control]\ntoken_file = \"secrets/token\"\n\n[log]\naccess = \"access.log\"\n");
    config.resolve_paths(Path::new("/etc/lb/lb.toml"));
    assert_eq!(
        config.control.token_file.as_deref(),
        Some(Path::new("/etc/lb/secrets/token"))
    );
    assert_eq!(
        config.log.access,
        AccessLog::File(PathBuf::from("/etc/lb/access.log"))
    );
}

#[test]
fn absolute_paths_and_resolved_configs_stay_as_they_are() {
    let mut config = parse_ok("[control]\ntoken_file = \"/run/lb/token\"\n");
    config.resolve_paths(Path::new("/etc/lb/lb.toml"));
    assert_eq!(
        config.control.token_file.as_deref(),
        Some(Path::new("/run/lb/token"))
    );

    // A config path without a directory is in the working directory; resolving is idempotent.
    let mut config = parse_ok("[control]\ntoken_file = \"token\"\n");
    config.resolve_paths(Path::new("lb.toml"));
    let once = config.control.token_file.clone().expect("token_file");
    assert!(once.is_absolute(), "{once:?}");
    let cwd = std::env::current_dir().expect("working directory");
    assert_eq!(once, cwd.join("token"));
    config.resolve_paths(Path::new("elsewhere/lb.toml"));
    assert_eq!(config.control.token_file, Some(once));
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("{text:?} should not parse"),
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn control_tls_keys_parse() {
    let config = parse_ok("[control]\ntls_cert = \"cert.pem\"\ntls_key = \"/etc/lb/key.pem\"\n");
    assert_eq!(
        config.control.tls,
        Some(ControlTls {
            cert: PathBuf::from("cert.pem"),
            key: PathBuf::from("/etc/lb/key.pem"),
            client_ca: None,
        })
    );
    let mut config = parse_ok(
        "[control]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nclient_ca = \"ca.pem\"\n",
    );
    config.resolve_paths(Path::new("/etc/lb/lb.toml"));
    assert_eq!(
        config.control.tls,
        Some(ControlTls {
            cert: PathBuf::from("/etc/lb/cert.pem"),
            key: PathBuf::from("/etc/lb/key.pem"),
            client_ca: Some(PathBuf::from("/etc/lb/ca.pem")),
        })
    );
    assert_eq!(parse_ok("").control.tls, None);
}

#[test]
fn a_tls_cert_needs_its_key_and_the_other_way_round() {
    assert_eq!(
        errors("[control]\ntls_cert = \"cert.pem\"\n"),
        ["2:12: control.tls_cert needs control.tls_key (the certificate's private key, PEM)"]
    );
    assert_eq!(
        errors("[control]\ngit_commit = false\ntls_key = \"key.pem\"\n"),
        ["3:11: control.tls_key needs control.tls_cert (the certificate chain, PEM)"]
    );
}

#[test]
fn client_ca_needs_tls() {
    assert_eq!(
        errors("[control]\nclient_ca = \"ca.pem\"\n"),
        ["2:13: control.client_ca needs control.tls_cert and control.tls_key: client certificates are only checked over TLS"]
    );
    // Both problems are reported at once.
    let lines = errors("[control]\ntls_key = \"key.pem\"\nclient_ca = \"ca.pem\"\n");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("2:11: control.tls_key needs"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("3:13: control.client_ca needs"),
        "{lines:?}"
    );
}

#[test]
fn empty_tls_paths_and_wrong_types_are_errors() {
    assert_eq!(
        errors("[control]\ntls_cert = \"\"\ntls_key = \"key.pem\"\n"),
        ["2:12: control.tls_cert is empty (a path to a PEM file)"]
    );
    let lines = errors("[control]\ntls_cert = 1\n");
    assert!(lines[0].starts_with("2:12: "), "{lines:?}");
    let lines = errors("[control]\ntls_certificate = \"cert.pem\"\n");
    assert!(
        lines[0].starts_with("2:1: ") && lines[0].contains("tls_certificate"),
        "{lines:?}"
    );
}

// === health checks ===

#[test]
fn rise_fall_and_check_timeout_default_to_acting_on_one_check_within_a_second() {
    let config = parse_ok("[pools.\"/\"]\nbackends = []\n");
    let checks = &config.pools[0].health_checks;
    assert_eq!((checks.rise, checks.fall), (1, 1));
    assert_eq!(checks.timeout, DEFAULT_CHECK_TIMEOUT);
    assert_eq!(checks.checks, [HealthCheck::default()]);
    assert_eq!(config.pools[0].idle_timeout, DEFAULT_IDLE_TIMEOUT);
    let config = parse_ok("[pools.\"/\"]\nidle_timeout = \"5s\"\n");
    assert_eq!(
        config.pools[0].idle_timeout,
        std::time::Duration::from_secs(5)
    );

    let config = parse_ok("[pools.\"/\"]\nrise = 3\nfall = 2\ncheck_timeout = \"250ms\"\n");
    let checks = &config.pools[0].health_checks;
    assert_eq!((checks.rise, checks.fall), (3, 2));
    assert_eq!(checks.timeout, std::time::Duration::from_millis(250));
}

#[test]
fn rise_and_fall_below_one_are_errors_with_their_position() {
    assert_eq!(
        errors("[pools.\"/\"]\nrise = 0\n"),
        ["2:8: rise = 0 is out of range: it counts consecutive passing checks to become healthy, 1 or more (1 acts on a single check)"]
    );
    assert_eq!(
        errors("[pools.\"/\"]\nfall = -2\n"),
        ["2:8: fall = -2 is out of range: it counts consecutive failing checks to become sick, 1 or more (1 acts on a single check)"]
    );
    let lines = errors("[pools.\"/\"]\ncheck_timeout = \"0s\"\n");
    assert!(
        lines[0].starts_with("2:17: ") && lines[0].contains("above zero"),
        "{lines:?}"
    );
}

// === reparse_backends: the fast path of a backend edit ===

const EDITED: &str = r#"# comments and shapes around the edited array
[listen]
http = "127.0.0.1:8080"

[control]
token_file = "token"

[pools."/"]
interval = "5s"
backends = [
  "127.0.0.1:8082",   # kept
  { addr = "127.0.0.1:8083", state = "drain" },
]

[pools."GET api.example.com/v1/{rest...}"]
backends = ["127.0.0.1:9000/v1/"] # inline

[pools."/empty/"]
backends = []
"#;

/// The config parts a fast re-parse must reproduce (Router has no `PartialEq`: routes are
/// compared by what they route).
fn assert_same(fast: &Config, full: &Config) {
    assert_eq!(fast.listen, full.listen);
    assert_eq!(fast.server, full.server);
    assert_eq!(fast.control, full.control);
    assert_eq!(fast.log, full.log);
    assert_eq!(fast.pools, full.pools);
    assert_eq!(format!("{:?}", fast.routes), format!("{:?}", full.routes));
}

/// Every backend edit of every pool of EDITED: the fast path gives exactly what a full parse
/// of the edited text gives.
#[test]
fn reparse_backends_equals_a_full_parse() {
    let old = parse_ok(EDITED);
    let is = |addr: &'static str| move |entry: &str| entry == addr;
    let mut cases = Vec::new();
    for pattern in ["/", "GET api.example.com/v1/{rest...}", "/empty/"] {
        cases.push((
            pattern,
            edit::add_backend_edit(EDITED, pattern, "10.0.0.1:1", None).unwrap(),
        ));
    }
    cases.push((
        "/",
        edit::remove_backend_edit(EDITED, "/", &is("127.0.0.1:8082"), None).unwrap(),
    ));
    cases.push((
        "/",
        edit::remove_backend_edit(EDITED, "/", &is("127.0.0.1:8083"), None).unwrap(),
    ));
    cases.push((
        "/",
        edit::set_backend_state_edit(EDITED, "/", &is("127.0.0.1:8082"), "disabled", None).unwrap(),
    ));
    cases.push((
        "/",
        edit::set_backend_state_edit(EDITED, "/", &is("127.0.0.1:8083"), "enabled", None).unwrap(),
    ));
    for (pattern, edited) in cases {
        let span = edited
            .backends
            .clone()
            .expect("an in-place edit reports its span");
        let fast = reparse_backends(&old, EDITED, &edited.text, pattern, span)
            .unwrap_or_else(|| panic!("no fast path for {}", edited.text));
        assert_same(&fast, &parse_ok(&edited.text));
    }
    // Paths already resolved in `old` (as apply keeps it) come out resolved, as apply makes them.
    let mut resolved = old;
    resolved.resolve_paths(Path::new("/etc/lb/lb.toml"));
    let edited = edit::add_backend_edit(EDITED, "/", "10.0.0.1:1", None).unwrap();
    let span = edited.backends.clone().unwrap();
    let mut fast = reparse_backends(&resolved, EDITED, &edited.text, "/", span).unwrap();
    let mut full = parse_ok(&edited.text);
    fast.resolve_paths(Path::new("/etc/lb/lb.toml"));
    full.resolve_paths(Path::new("/etc/lb/lb.toml"));
    assert_same(&fast, &full);
}

/// Whenever the edit is not just the one array, or its result is invalid, the caller gets
/// `None` and parses in full (which positions the error).
#[test]
fn reparse_backends_falls_back_when_it_cannot_show_equality() {
    let old = parse_ok(EDITED);
    let edited = edit::add_backend_edit(EDITED, "/", "10.0.0.1:1", None).unwrap();
    let span = edited.backends.clone().unwrap();
    let fast = |old: &Config, old_text: &str, new_text: &str, pattern: &str, span: Range<usize>| {
        reparse_backends(old, old_text, new_text, pattern, span)
    };
    assert!(fast(&old, EDITED, &edited.text, "/", span.clone()).is_some());

    // Text outside the array changed too (a human save in the same moment, say).
    let elsewhere = edited
        .text
        .replace("interval = \"5s\"", "interval = \"0s\"");
    assert!(fast(&old, EDITED, &elsewhere, "/", span.clone()).is_none());
    let appended = format!("{}[pools.\"/x/\"]\n", edited.text);
    assert!(fast(&old, EDITED, &appended, "/", span.clone()).is_none());
    // The span is not the pool's array, or the pool is another one.
    assert!(fast(&old, EDITED, &edited.text, "/empty/", span.clone()).is_none());
    assert!(fast(&old, EDITED, &edited.text, "/nope/", span.clone()).is_none());
    assert!(fast(&old, EDITED, &edited.text, "/", span.start + 1..span.end).is_none());
    // `old` is not the config of `old_text`.
    let other = parse_ok(&edited.text);
    assert!(fast(&other, EDITED, &edited.text, "/", span.clone()).is_none());

    // The new array holds a duplicate, a bad address, or more than one value.
    for new_array in [
        "[\"127.0.0.1:8082\", \"127.0.0.1:8082\"]",
        "[\"localhost:1\"]",
        "[\"127.0.0.1:1\"]\nx = [1]",
        "[\"127.0.0.1:1\"] # ]",
    ] {
        let text = format!(
            "{}{new_array}{}",
            &EDITED[..span.start],
            &EDITED[span.end..]
        );
        assert!(
            fast(&old, EDITED, &text, "/", span.clone()).is_none(),
            "{new_array}"
        );
    }
}

/// A backend's url_path is checked once, as a URI path prefix, where it is declared: in the
/// file and through `BackendAddr::new` (the control API and lbctl).
#[test]
fn a_url_path_must_be_a_uri_path() {
    for good in ["127.0.0.1:80/v1/", "127.0.0.1:80/a%20b/c", "[::1]:80/x~y"] {
        let addr: BackendAddr = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(addr.to_string(), good);
    }
    for bad in [
        "127.0.0.1:80/a\u{e9}",
        "127.0.0.1:80/a\u{7f}b",
        "127.0.0.1:80/a<b",
    ] {
        let error = bad.parse::<BackendAddr>().unwrap_err();
        assert!(
            matches!(error, BackendAddrError::UrlPath { .. }),
            "{bad}: {error}"
        );
    }
    let ip = "127.0.0.1".parse().unwrap();
    assert!(BackendAddr::new(ip, 80, "/v1").is_ok());
    for bad in ["/a b", "/a?q", "/a#f", "/\u{e9}", "/a\u{1}"] {
        assert!(
            matches!(
                BackendAddr::new(ip, 80, bad),
                Err(BackendAddrError::UrlPath { .. })
            ),
            "{bad:?}"
        );
    }
}
