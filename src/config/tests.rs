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

// === [tls], [listen] https and backend_tls ===

const TLS: &str = "[[tls.certificates]]\ncert = \"certs/a.pem\"\nkey = \"certs/a.key\"\n";

#[test]
fn tls_section_parses_with_defaults() {
    let config = parse_ok(&format!(
        "[listen]\nhttps = \"0.0.0.0:8443\"\n\n{TLS}\n[[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\ndefault = true\n"
    ));
    assert_eq!(
        config.listen.https,
        vec!["0.0.0.0:8443"
            .parse::<std::net::SocketAddr>()
            .expect("addr")]
    );
    assert!(!config.listen.redirect_https);
    let tls = config.tls.expect("[tls]");
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.min_version, TlsVersion::V1_2);
    assert_eq!(tls.unknown_sni, UnknownSni::Default);
    assert_eq!(tls.client_ca, None);
    assert_eq!(
        tls.default_certificate().map(|c| c.cert.clone()),
        Some(PathBuf::from("b.pem"))
    );
}

#[test]
fn tls_settings_and_https_lists_parse() {
    let config = parse_ok(&format!(
        "[listen]\nhttps = [\"0.0.0.0:8443\", \"[::]:8443\"]\nredirect_https = true\n\n[tls]\nmin_version = \"1.3\"\nunknown_sni = \"refuse\"\nclient_ca = \"ca.pem\"\n\n{TLS}"
    ));
    assert_eq!(config.listen.https.len(), 2);
    assert!(config.listen.redirect_https);
    let tls = config.tls.expect("[tls]");
    assert_eq!(tls.min_version, TlsVersion::V1_3);
    assert_eq!(tls.unknown_sni, UnknownSni::Refuse);
    assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(
        tls.default_certificate().map(|c| c.cert.clone()),
        Some(PathBuf::from("certs/a.pem"))
    );
}

#[test]
fn tls_paths_resolve_against_the_config_directory() {
    let mut config = parse_ok(&format!(
        "[tls]\nclient_ca = \"ca.pem\"\n\n{TLS}\n[pools.\"/\"]\nbackend_tls = {{ ca = \"backend-ca.pem\", server_name = \"api.internal\" }}\n"
    ));
    config.resolve_paths(Path::new("/etc/lb/lb.toml"));
    let tls = config.tls.expect("[tls]");
    assert_eq!(tls.certificates[0].cert, Path::new("/etc/lb/certs/a.pem"));
    assert_eq!(tls.certificates[0].key, Path::new("/etc/lb/certs/a.key"));
    assert_eq!(tls.client_ca.as_deref(), Some(Path::new("/etc/lb/ca.pem")));
    assert_eq!(
        config.pools[0].backend_tls,
        Some(BackendTls {
            ca: Some(PathBuf::from("/etc/lb/backend-ca.pem")),
            server_name: Some("api.internal".to_owned()),
        })
    );
}

#[test]
fn backend_tls_without_ca_uses_system_roots() {
    let config = parse_ok("[pools.\"/\"]\nbackend_tls = {}\n");
    assert_eq!(config.pools[0].backend_tls, Some(BackendTls::default()));
    let config = parse_ok("[pools.\"/\"]\n");
    assert_eq!(config.pools[0].backend_tls, None);
}

#[test]
fn tls_errors_point_at_the_value() {
    assert_eq!(
        errors("[listen]\nhttps = \"0.0.0.0:8443\"\n"),
        ["2:9: listen.https needs certificates: add a [[tls.certificates]] entry with cert and key (PEM files)"]
    );
    assert_eq!(
        errors(&format!(
            "[listen]\nhttps = [\"0.0.0.0:8443\", \"nope\"]\n\n{TLS}"
        )),
        ["2:26: listen.https \"nope\" is not IP:PORT (e.g. \"0.0.0.0:8443\", \"[::]:8443\")"]
    );
    assert_eq!(
        errors(&format!("[listen]\nhttp = \"0.0.0.0:8443\"\nhttps = \"0.0.0.0:8443\"\n\n{TLS}")),
        ["3:9: listen.https 0.0.0.0:8443 is also listen.http: one port serves either cleartext or TLS"]
    );
    assert_eq!(
        errors("[listen]\nredirect_https = true\n"),
        ["2:18: listen.redirect_https needs listen.https: there is no HTTPS listener to redirect to"]
    );
    assert_eq!(
        errors(&format!("[tls]\nmin_version = \"1.1\"\n\n{TLS}")),
        ["2:15: tls.min_version \"1.1\" is not \"1.2\" or \"1.3\""]
    );
    assert_eq!(
        errors(&format!("[tls]\nunknown_sni = \"drop\"\n\n{TLS}")),
        ["2:15: tls.unknown_sni \"drop\" is not \"default\" (serve the default certificate) or \"refuse\" (fail the handshake)"]
    );
    assert_eq!(
        errors("[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"\"\n"),
        ["3:7: tls.certificates key is empty (a path to a PEM file)"]
    );
    assert_eq!(
        errors(&format!("{TLS}default = true\n\n[[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\ndefault = true\n")),
        ["9:11: only one [[tls.certificates]] entry may say default = true"]
    );
    assert_eq!(
        errors("[pools.\"/\"]\nbackend_tls = { server_name = \"bad name!\" }\n"),
        ["2:31: pool \"/\": backend_tls.server_name \"bad name!\" is not a DNS name or IP address"]
    );
    assert_eq!(
        errors("[tls]\nmin_version = \"1.3\"\n").len(),
        1,
        "[tls] without certificates"
    );
    let missing_key = errors("[[tls.certificates]]\ncert = \"a.pem\"\n");
    assert_eq!(missing_key.len(), 1, "{missing_key:?}");
    assert!(
        missing_key[0]
            .ends_with("[[tls.certificates]] needs key (the certificate's private key, PEM)"),
        "{missing_key:?}"
    );
}

#[test]
fn sync_keys_parse_with_defaults() {
    let config = parse_ok(
        "[control]\nread_only = true\n\n[sync]\nremote = \"git@example.com:ops/lb.git\"\nbranch = \"main\"\n",
    );
    assert!(config.control.read_only);
    assert_eq!(
        config.sync,
        Some(SyncConfig {
            remote: "git@example.com:ops/lb.git".to_owned(),
            branch: "main".to_owned(),
            interval: DEFAULT_SYNC_INTERVAL,
            author: None,
            peers: Vec::new(),
        })
    );
    let config = parse_ok(
        "[sync]\nremote = \"/srv/lb.git\"\nbranch = \"fleet/eu\"\ninterval = \"200ms\"\nauthor = \"lb fleet <lb@example.com>\"\n",
    );
    let sync = config.sync.expect("[sync]");
    assert_eq!(sync.interval, std::time::Duration::from_millis(200));
    assert_eq!(sync.author.as_deref(), Some("lb fleet <lb@example.com>"));
    assert!(parse_ok("").sync.is_none());
}

#[test]
fn sync_peers_are_host_port_each_once() {
    let config = parse_ok(
        "[sync]\nremote = \"/srv/lb.git\"\nbranch = \"main\"\npeers = [\"10.0.0.7:9090\", \"lb-2.internal:9090\", \"[::1]:9090\"]\n",
    );
    assert_eq!(
        config.sync.expect("[sync]").peers,
        ["10.0.0.7:9090", "lb-2.internal:9090", "[::1]:9090"]
    );
    let found = errors(
        "[sync]\nremote = \"/srv/lb.git\"\nbranch = \"main\"\npeers = [\"a:1\", \"nohost\", \"a:1\", \"b:0\"]\n",
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("4:17: sync.peers entry \"nohost\" is not HOST:PORT"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("4:27: sync.peers lists \"a:1\" twice"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("4:34: sync.peers entry \"b:0\""),
        "{found:?}"
    );
}

#[test]
fn a_credential_in_the_sync_remote_is_refused_an_ssh_user_is_not() {
    for remote in [
        "https://ops:s3cret@git.example.com/ops/lb.git",
        "https://ghp_token@github.com/ops/lb.git",
        "ssh://git:pw@git.example.com/ops/lb.git",
    ] {
        let found = errors(&format!(
            "[sync]\nremote = \"{remote}\"\nbranch = \"main\"\n"
        ));
        assert_eq!(found.len(), 1, "{remote}: {found:?}");
        assert!(
            found[0].starts_with("2:10: sync.remote carries a ")
                && found[0].contains("credential helper"),
            "{found:?}"
        );
        assert!(!found[0].contains("s3cret"), "{found:?}");
    }
    for remote in [
        "git@github.com:ops/lb.git",
        "ssh://git@git.example.com/ops/lb.git",
        "https://git.example.com/ops/lb.git",
        "https://git.example.com/ops/a@b.git",
        "/srv/lb.git",
    ] {
        let config = parse_ok(&format!(
            "[sync]\nremote = \"{remote}\"\nbranch = \"main\"\n"
        ));
        assert_eq!(config.sync.map(|s| s.remote).as_deref(), Some(remote));
    }
}

#[test]
fn sync_errors_point_at_the_key() {
    assert_eq!(
        errors("[sync]\nbranch = \"main\"\n"),
        ["1:1: [sync] needs remote (a URL git accepts, e.g. \"git@example.com:ops/lb-config.git\" or a path)"]
    );
    let found = errors(
        "[sync]\nremote = \"-oProxyCommand=x\"\nbranch = \"a..b\"\ninterval = \"0s\"\nauthor = \"nobody\"\n",
    );
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found[0].starts_with("2:10: sync.remote must not start with '-'"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("3:10: sync.branch \"a..b\" is not a branch name"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("4:12: duration \"0s\" must be above zero"),
        "{found:?}"
    );
    assert!(
        found[3].starts_with("5:10: sync.author \"nobody\" is not"),
        "{found:?}"
    );
    assert!(errors("[sync]\nremote = \"x\"\nbranch = \"main\"\nbogus = 1\n")[0].contains("bogus"));
}

#[test]
fn a_rate_limit_parses_inline_or_as_a_table_with_its_defaults() {
    let inline = parse_ok(
        "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\nrate_limit = { requests_per_second = 100, burst = 50, key = \"ip\" }\n",
    );
    assert_eq!(
        inline.pools[0].rate_limit,
        Some(RateLimitConfig {
            requests_per_second: Share(100.0),
            burst: 50,
            key: RateLimitKey::Ip,
        })
    );
    let table = parse_ok(
        "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n[pools.\"/\".rate_limit]\nrequests_per_second = 0.5\nkey = \"header:X-Api-Key\"\n",
    );
    assert_eq!(
        table.pools[0].rate_limit,
        Some(RateLimitConfig {
            requests_per_second: Share(0.5),
            burst: 0,
            key: RateLimitKey::Header("x-api-key".to_owned()),
        })
    );
    assert_eq!(parse_ok("[pools.\"/\"]\n").pools[0].rate_limit, None);
}

#[test]
fn a_bad_rate_limit_is_refused_at_its_value() {
    let pool = "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n";
    assert_eq!(
        errors(&format!("{pool}rate_limit = {{ burst = 5 }}\n")),
        ["3:14: pool \"/\": rate_limit needs requests_per_second (e.g. rate_limit = { requests_per_second = 100, burst = 50 })"]
    );
    for rate in ["0", "-1", "nan", "inf", "2e9"] {
        let errors = errors(&format!(
            "{pool}rate_limit = {{ requests_per_second = {rate} }}\n"
        ));
        assert_eq!(errors.len(), 1, "{rate}: {errors:?}");
        assert!(
            errors[0].starts_with("3:38: rate_limit.requests_per_second must be a number above 0"),
            "{rate}: {errors:?}"
        );
    }
    assert_eq!(
        errors(&format!(
            "{pool}rate_limit = {{ requests_per_second = 1, burst = -1 }}\n"
        )),
        ["3:49: rate_limit.burst must be a whole number from 0 to 1000000 (the requests a client may make at once beyond the rate)"]
    );
    for key in [
        "\"ipv6\"",
        "\"header:\"",
        "\"header:x y\"",
        "\"cookie:s\"",
        "\"header::path\"",
    ] {
        let errors = errors(&format!(
            "{pool}rate_limit = {{ requests_per_second = 1, key = {key} }}\n"
        ));
        assert_eq!(
            errors,
            [format!(
                "3:47: rate_limit.key {} is not \"ip\" or \"header:NAME\" with a valid header name",
                key
            )],
        );
    }
    let unknown = errors(&format!(
        "{pool}rate_limit = {{ requests_per_second = 1, zone = \"x\" }}\n"
    ));
    assert!(unknown[0].starts_with("3:"), "{unknown:?}");
    assert!(unknown[0].contains("zone"), "{unknown:?}");
}

#[test]
fn trusted_proxies_are_networks_without_host_bits_each_listed_once() {
    let config = parse_ok(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\", \"::1/128\"]\n",
    );
    let networks = config.server.trusted_proxies.expect("set");
    let text: Vec<String> = networks.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::1/128"]
    );
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    assert!(networks[0].contains(ip("10.255.0.1")));
    assert!(!networks[0].contains(ip("11.0.0.1")));
    assert!(
        networks[0].contains(ip("::ffff:10.1.2.3")),
        "an IPv4-mapped peer is its IPv4 address"
    );
    assert!(networks[1].contains(ip("192.168.1.7")));
    assert!(!networks[1].contains(ip("192.168.1.8")));
    assert!(networks[2].contains(ip("fd12::1")));
    assert!(!networks[2].contains(ip("10.0.0.1")));
    assert!(networks[3].contains(ip("::1")));
    let everything = parse_ok("[server]\ntrusted_proxies = [\"0.0.0.0/0\", \"::/0\"]\n");
    let everything = everything.server.trusted_proxies.expect("set");
    assert!(everything[0].contains(ip("203.0.113.9")));
    assert!(everything[1].contains(ip("2001:db8::1")));
    assert_eq!(
        parse_ok("[server]\ntrusted_proxies = []\n")
            .server
            .trusted_proxies,
        Some(vec![])
    );
    assert_eq!(parse_ok("").server.trusted_proxies, None);

    assert_eq!(
        errors("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/8\", \"10.0.0.0/33\", \"proxy.local\", \"10.0.0.0/8\"]\n"),
        [
            "2:34: server.trusted_proxies: \"10.1.2.3/8\" has bits set past its prefix: the network is 10.0.0.0/8",
            "2:48: server.trusted_proxies: \"10.0.0.0/33\": the prefix length is above 32 for this address family",
            "2:63: server.trusted_proxies: \"proxy.local\" is not an IP network (ADDR/PREFIX, e.g. \"10.0.0.0/8\", \"fd00::/8\", or one address)",
            "2:78: server.trusted_proxies lists 10.0.0.0/8 twice",
        ]
    );
}
