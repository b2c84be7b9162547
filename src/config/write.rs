//! config::write: owns putting new lb.toml bytes on disk atomically; never parses.
//!
//! A temporary file in the same directory as the real file is written, given the original's
//! owner (best effort) and permission bits, fsynced, and renamed over it; then the directory is
//! fsynced so the rename survives a crash. Readers (our own watcher included) see the old file or
//! the new one, never a half-written one, and on any error the original is untouched and the
//! temporary file is removed.
//!
//! When the configured path is a symlink the file it resolves to is replaced and every link is
//! kept. That covers Kubernetes' ConfigMap layout (`lb.toml -> ..data/lb.toml`,
//! `..data -> ..2026_11_25_…/`), where the real file lives in the timestamped directory. NOTE:
//! kubelet mounts ConfigMaps read-only and rewrites them on its own schedule, so write-back
//! there fails with the OS error (or is later overwritten); the layout is handled so that a
//! writable copy of it behaves.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many symlinks we follow before giving up, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", describe(.path, .target))]
pub struct WriteError {
    /// The path we were asked to write.
    pub path: PathBuf,
    /// The file actually replaced, after following symlinks (the same as `path` if none).
    pub target: PathBuf,
    #[source]
    pub source: io::Error,
}

fn describe(path: &Path, target: &Path) -> String {
    if path == target {
        path.display().to_string()
    } else {
        format!("{} (resolved to {})", path.display(), target.display())
    }
}

/// Atomically replaces the file at `path` (or the file a symlink at `path` resolves to),
/// creating it if it does not exist.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), WriteError> {
    let error = |target: PathBuf| {
        move |source: io::Error| WriteError {
            path: path.to_path_buf(),
            target,
            source,
        }
    };
    let (dir, file_name) = resolve(path).map_err(error(path.to_path_buf()))?;
    let target = dir.join(&file_name);
    write_in(&dir, &target, &file_name, contents).map_err(error(target.clone()))
}

fn write_in(
    dir: &Path,
    target: &Path,
    file_name: &std::ffi::OsStr,
    contents: &str,
) -> io::Result<()> {
    let original = match fs::metadata(target) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    if original.is_none() {
        // A new file gets the mode any editor would give it (0666 less the umask), not
        // tempfile's private 0600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    // Dropping `temp` on any early return removes it.
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(contents.as_bytes())?;
    if let Some(original) = &original {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // NOTE: best effort. Only root may give a file away; an unprivileged lb leaves the
            // file owned by its own user, which is what writing it in place would not do but
            // what any editor's save-by-rename does too. Ownership before mode: chown clears
            // set-id bits.
            let _ = std::os::unix::fs::fchown(
                temp.as_file(),
                Some(original.uid()),
                Some(original.gid()),
            );
        }
        temp.as_file().set_permissions(original.permissions())?;
    }
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|e| e.error)?;
    // The new contents are in place and visible from here on; failing the write now would
    // report a change as not made. Some filesystems cannot fsync a directory at all.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The real directory and file name that `path` designates: symlinks are followed one by one
/// (so a dangling link yields the file it would point to, which we then create, instead of
/// replacing the link), and the directory is canonicalised so the temporary file and the
/// rename happen in the same real directory even while a `..data` link is being swapped.
fn resolve(path: &Path) -> io::Result<(PathBuf, std::ffi::OsString)> {
    let mut current = path.to_path_buf();
    let mut n_links = 0;
    loop {
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                n_links += 1;
                if n_links > MAX_SYMLINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let link = fs::read_link(&current)?;
                // A relative link is relative to the directory holding it; joining an absolute
                // one replaces the whole path.
                current = match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    let file_name = current
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?
        .to_owned();
    let dir = match current.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((fs::canonicalize(dir)?, file_name))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn is_symlink(path: &Path) -> bool {
        fs::symlink_metadata(path).unwrap().file_type().is_symlink()
    }

    #[test]
    fn replaces_content_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(names(dir.path()), ["lb.toml"], "temp file left behind");
    }

    #[test]
    fn creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        write_atomic(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        // 0666 less some umask: at least readable and writable by its owner.
        assert_eq!(mode(&path) & 0o600, 0o600);
        assert_eq!(mode(&path) & 0o111, 0);
    }

    #[test]
    fn writes_through_a_symlink_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("real")).unwrap();
        fs::write(root.join("real/lb.toml"), "old").unwrap();
        fs::set_permissions(root.join("real/lb.toml"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("real/lb.toml", root.join("relative.toml")).unwrap();
        symlink(root.join("real/lb.toml"), root.join("absolute.toml")).unwrap();

        write_atomic(&root.join("relative.toml"), "one").unwrap();
        assert!(is_symlink(&root.join("relative.toml")));
        assert_eq!(
            fs::read_to_string(root.join("real/lb.toml")).unwrap(),
            "one"
        );

        write_atomic(&root.join("absolute.toml"), "two").unwrap();
        assert!(is_symlink(&root.join("absolute.toml")));
        assert_eq!(
            fs::read_to_string(root.join("real/lb.toml")).unwrap(),
            "two"
        );
        assert_eq!(mode(&root.join("real/lb.toml")), 0o600);
        assert_eq!(names(&root.join("real")), ["lb.toml"]);
    }

    #[test]
    fn writes_through_configmap_style_symlinks_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("..2026_11_25_10_00_00.1")).unwrap();
        fs::write(root.join("..2026_11_25_10_00_00.1/lb.toml"), "old").unwrap();
        symlink("..2026_11_25_10_00_00.1", root.join("..data")).unwrap();
        symlink("..data/lb.toml", root.join("lb.toml")).unwrap();

        write_atomic(&root.join("lb.toml"), "new").unwrap();
        assert!(is_symlink(&root.join("lb.toml")));
        assert!(is_symlink(&root.join("..data")));
        assert_eq!(
            fs::read_to_string(root.join("..2026_11_25_10_00_00.1/lb.toml")).unwrap(),
            "new"
        );
        assert_eq!(fs::read_to_string(root.join("lb.toml")).unwrap(), "new");
        assert_eq!(names(&root.join("..2026_11_25_10_00_00.1")), ["lb.toml"]);
    }

    #[test]
    fn a_dangling_symlink_gets_its_target_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("real.toml", root.join("lb.toml")).unwrap();
        write_atomic(&root.join("lb.toml"), "new").unwrap();
        assert!(is_symlink(&root.join("lb.toml")));
        assert_eq!(fs::read_to_string(root.join("real.toml")).unwrap(), "new");
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("b.toml", root.join("a.toml")).unwrap();
        symlink("a.toml", root.join("b.toml")).unwrap();
        let error = write_atomic(&root.join("a.toml"), "new").unwrap_err();
        assert!(error.to_string().contains("a.toml"), "{error}");
        assert!(is_symlink(&root.join("a.toml")));
    }

    #[test]
    fn a_read_only_directory_fails_naming_the_path_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).unwrap();
        let path = conf.join("lb.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o555)).unwrap();

        // Root (CAP_DAC_OVERRIDE) writes into a 0555 directory regardless; the other failure
        // tests below cover the error path there.
        let privileged = fs::write(conf.join("probe"), "").is_ok();
        let result = write_atomic(&path, "new");
        let _ = fs::remove_file(conf.join("probe"));
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o755)).unwrap();
        if privileged {
            result.unwrap();
            return;
        }
        let error = result.unwrap_err();
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "{error}"
        );
        assert_eq!(error.source.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(&conf), ["lb.toml"]);
    }

    #[test]
    fn a_parent_that_is_a_file_fails_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose parent is a regular file cannot be written, even by root.
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        let path = blocker.join("lb.toml");
        let error = write_atomic(&path, "new").unwrap_err();
        assert!(error.to_string().contains("file/lb.toml"), "{error}");
        assert_eq!(fs::read_to_string(&blocker).unwrap(), "x");
        assert_eq!(names(dir.path()), ["file"]);
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file_and_names_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Renaming a file over a non-empty directory fails for root too.
        fs::create_dir(root.join("real")).unwrap();
        fs::write(root.join("real/keep"), "x").unwrap();
        symlink("real", root.join("lb.toml")).unwrap();
        let error = write_atomic(&root.join("lb.toml"), "new").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("lb.toml (resolved to "), "{message}");
        assert!(message.ends_with(&error.source.to_string()), "{message}");
        assert_eq!(names(root), ["lb.toml", "real"]);
        assert_eq!(names(&root.join("real")), ["keep"]);
    }
}
