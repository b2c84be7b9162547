//! config::write: owns putting new lb.toml bytes on disk atomically; never parses.
//!
//! A temporary file in the same directory as the real file is written, fsynced, given the
//! original's permission bits, and renamed over it; then the directory is fsynced. Readers see
//! the old file or the new one, never a half-written one. When the configured path is a symlink
//! (including Kubernetes' `lb.toml -> ..data/lb.toml` layout) the file it resolves to is replaced
//! and the links are kept.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Atomically replaces the file at `path` (or the file a symlink at `path` resolves to).
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), WriteError> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let error = |source: std::io::Error| WriteError {
        path: target.clone(),
        source,
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let permissions = std::fs::metadata(&target).ok().map(|m| m.permissions());
    let mut temp = tempfile::Builder::new()
        .prefix(".lb.toml.")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(error)?;
    temp.write_all(contents.as_bytes()).map_err(error)?;
    temp.as_file().sync_all().map_err(error)?;
    if let Some(permissions) = permissions {
        temp.as_file().set_permissions(permissions).map_err(error)?;
    }
    // On failure the NamedTempFile is dropped and removed; the original is untouched.
    temp.persist(&target).map_err(|e| error(e.error))?;
    // Make the rename itself durable.
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn replaces_content_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn writes_through_configmap_style_symlinks_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/lb.toml"), "old").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/lb.toml", root.join("lb.toml")).unwrap();
        write_atomic(&root.join("lb.toml"), "new").unwrap();
        assert!(std::fs::symlink_metadata(root.join("lb.toml"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(root.join("..data"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(root.join("..v1/lb.toml")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_failed_write_names_the_path_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose parent is a regular file cannot be written, even by root.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let path = blocker.join("lb.toml");
        let error = write_atomic(&path, "new").unwrap_err();
        assert!(error.to_string().contains("lb.toml"), "{error}");
        assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "x");
    }
}
