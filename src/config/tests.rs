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
