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
