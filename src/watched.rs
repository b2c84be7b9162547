//! watched: owns working out which directories, and which entry names in them, can change what
//! a file path reads as — the path's own name, its resolved target's, and the first hop of a
//! relative symlink (a Kubernetes ConfigMap's or Secret's `..data`). Pure `std::fs` look-ups:
//! it never watches, reads a file's content, or reloads anything; `watch` (lb.toml) and
//! `tls::watch` (certificate files) build on it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Directories whose changes can change what `path` reads as.
pub fn watched_dirs(path: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dirs.insert(parent(path));
    if let Ok(target) = std::fs::canonicalize(path) {
        dirs.insert(parent(&target));
    }
    dirs
}

/// The directory entry names whose changes can change what `path` reads as: the file's own
/// name, its resolved target's name, and the first hop of a relative symlink (a ConfigMap's
/// `..data`). Everything else in the watched directories (a log file written beside lb.toml,
/// say) is ignored; reacting to it would re-read the file on every log line.
pub fn relevant_names(path: &Path) -> BTreeSet<OsString> {
    let mut names = BTreeSet::new();
    names.extend(path.file_name().map(OsString::from));
    if let Ok(target) = std::fs::canonicalize(path) {
        names.extend(target.file_name().map(OsString::from));
    }
    if let Ok(link) = std::fs::read_link(path) {
        if let Some(Component::Normal(first)) = link.components().next() {
            names.insert(first.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_file_its_target_and_a_configmap_link_are_relevant() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("lb.toml");
        std::fs::write(&plain, "").unwrap();
        let names = relevant_names(&plain);
        assert_eq!(names, BTreeSet::from([OsString::from("lb.toml")]));

        // Kubernetes ConfigMap layout: lb.toml -> ..data/lb.toml, ..data -> ..2026_11_25/.
        let cm = dir.path().join("cm");
        std::fs::create_dir_all(cm.join("..2026_11_25")).unwrap();
        std::fs::write(cm.join("..2026_11_25/lb.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_11_25", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/lb.toml", cm.join("lb.toml")).unwrap();
        let names = relevant_names(&cm.join("lb.toml"));
        assert!(names.contains(&OsString::from("lb.toml")));
        assert!(names.contains(&OsString::from("..data")));
        assert!(!names.contains(&OsString::from("access.log")));
    }
}
