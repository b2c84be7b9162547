//! config::write: owns putting new lb.toml bytes on disk atomically, and only over the text an
//! edit was computed from; never parses.
//!
//! [`replace`] writes a temporary file in the same directory as the real file, gives it the
//! original's owner (best effort) and permission bits, fsyncs it, and swaps it with the real
//! file in one `renameat2(RENAME_EXCHANGE)`. The swap moves the old file to the temporary name
//! instead of unlinking it, so what it replaced can be read back: when that is the text the edit
//! was based on, the old file is removed and the directory fsynced; when it is not (a save
//! landed after lb read the file), the two are swapped back and the caller is told
//! [`Replaced::Changed`], with the file as the save left it. A plain rename cannot do this: it
//! drops whatever it replaced, unseen.
//!
//! NOTE: a program that writes the file *in place* is covered as long as its write lands
//! before lb reads the swapped-out file back (its open truncates, so the read-back differs);
//! one that opened the file before the swap and writes only after that read writes into the
//! file lb then removes. Editors save by rename, which the swap always sees; what it cannot
//! prevent is a *second* save that reads the file in the microseconds lb's file is visible
//! before a first save (landed between lb's last `stat` and its swap) is swapped back: that
//! second save, based on lb's text, then replaces the first. The `stat` right before the swap
//! and the identity check right after it keep that window to a few syscalls, and the first save
//! is then kept beside the file as `<file>.superseded-<unix ms>` (logged), so nothing is lost.
//!
//! Where the exchange is not available (not Linux, or a filesystem that answers `EINVAL`), the
//! file is re-read just before a plain rename: the guarantee is then weaker, as a save landing
//! between that read and the rename is replaced.
//!
//! Readers (our own watcher included) see the old file or the new one, never a half-written one,
//! and on any error the original is untouched and the temporary file is removed.
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

use tempfile::NamedTempFile;

/// How many symlinks we follow before giving up, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;
/// How many times a save that landed during a swap-back is itself put back before giving up.
/// Each round needs yet another save within the microseconds between two syscalls.
const MAX_PUT_BACK: usize = 8;

/// Why lb.toml could not be replaced; the file on disk is left as it was.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", describe(.path, .target))]
pub struct WriteError {
    /// The path we were asked to write.
    pub path: PathBuf,
    /// The file actually replaced, after following symlinks (the same as `path` if none).
    pub target: PathBuf,
    /// The failing I/O operation's error.
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

/// What [`replace`] did.
#[derive(Debug)]
pub enum Replaced {
    /// The new contents are in place. The metadata is the new file's, taken through lb's own
    /// handle after the swap: a save that lands after it has another inode, size or change time.
    Written(fs::Metadata),
    /// The file no longer held the expected text (or is gone): it is as the last save left it,
    /// and nothing was written.
    Changed,
}

/// A file's text as an edit read it, with its metadata from the same open file.
#[derive(Debug)]
pub struct Base {
    /// The file's whole text.
    pub text: String,
    metadata: fs::Metadata,
}

/// Reads `path` (symlinks followed) as the base of an edit.
pub fn read(path: &Path) -> io::Result<Base> {
    let mut file = fs::File::open(path)?;
    let metadata = file.metadata()?;
    let mut text = String::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    io::Read::read_to_string(&mut file, &mut text)?;
    Ok(Base { text, metadata })
}

/// Atomically replaces the file at `path` (or the file a symlink at `path` resolves to) with
/// `contents`, provided it still holds `base`'s text at the instant of the swap.
pub fn replace(path: &Path, contents: &str, base: &Base) -> Result<Replaced, WriteError> {
    let error = |target: PathBuf| {
        move |source: io::Error| WriteError {
            path: path.to_path_buf(),
            target,
            source,
        }
    };
    let (dir, file_name) = resolve(path).map_err(error(path.to_path_buf()))?;
    let target = dir.join(&file_name);
    replace_in(&dir, &target, &file_name, contents, base).map_err(error(target.clone()))
}

fn replace_in(
    dir: &Path,
    target: &Path,
    file_name: &std::ffi::OsStr,
    contents: &str,
    base: &Base,
) -> io::Result<Replaced> {
    let expected = base.text.as_bytes();
    let original = match fs::metadata(target) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replaced::Changed),
        Err(e) => return Err(e),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    // Dropping `temp` on any early return removes whatever its name designates by then: the new
    // file before a swap, the replaced one after it.
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(contents.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // NOTE: best effort. Only root may give a file away; an unprivileged lb leaves the
        // file owned by its own user, which is what writing it in place would not do but
        // what any editor's save-by-rename does too. Ownership before mode: chown clears
        // set-id bits.
        let _ =
            std::os::unix::fs::fchown(temp.as_file(), Some(original.uid()), Some(original.gid()));
    }
    temp.as_file().set_permissions(original.permissions())?;
    temp.as_file().sync_all()?;
    // A save since the read (seen by `stat`) needs no swap to be found: the swap below shows
    // lb's file at `target` for the moment until it is swapped back, and this keeps that to
    // saves landing within the few microseconds from here to the swap.
    if !same_file(&fs::metadata(target)?, &base.metadata) {
        return Ok(Replaced::Changed);
    }
    match exchange(temp.path(), target) {
        Ok(()) => {}
        // Removed since it was read: there is nothing the edit could be applied over.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replaced::Changed),
        Err(e) if unsupported(&e) => return replace_by_rename(dir, target, temp, expected),
        Err(e) => return Err(e),
    }
    // `temp`'s name now designates the file that was at `target`. Another file than the one
    // read (a save by rename since) is put back at once, on one `stat`: until then lb's file is
    // what a reader of `target` sees, and a save based on it would drop the one it replaced.
    if identity(&fs::symlink_metadata(temp.path())?) != identity(&base.metadata) {
        put_back(temp, target)?;
        return Ok(Replaced::Changed);
    }
    match fs::read(temp.path()) {
        Ok(replaced) if replaced == expected => {}
        Ok(_) => {
            put_back(temp, target)?;
            return Ok(Replaced::Changed);
        }
        Err(e) => {
            put_back(temp, target)?;
            return Err(e);
        }
    }
    let written = temp.as_file().metadata()?;
    // Removes the replaced file.
    temp.close()?;
    sync_dir(dir);
    Ok(Replaced::Written(written))
}

/// Swaps what `temp` and `target` designate back, after a swap put lb's file at `target` over a
/// save it must not replace. Then `temp` designates lb's file, and dropping it removes it.
///
/// Another save may land at `target` between the two swaps: then *it* comes back out, and it is
/// newer than what went in, so it is swapped in again in turn, until what comes out is what lb
/// put in last (lb's file, or an older save that a newer one supersedes).
///
/// When what comes out last is not lb's file but an older save, the newer one may have been
/// based on lb's text (read in the moment it was visible) and so lack what the older one
/// changed: the older save is kept beside the file ([`keep_superseded`]), never removed.
fn put_back(temp: NamedTempFile, target: &Path) -> io::Result<()> {
    let ours = identity(&temp.as_file().metadata()?);
    // What `target` holds if nobody saved since the last swap.
    let mut put_in = ours;
    for _ in 0..MAX_PUT_BACK {
        let going_in = identity(&fs::symlink_metadata(temp.path())?);
        exchange(temp.path(), target)?;
        if identity(&fs::symlink_metadata(temp.path())?) == put_in {
            if put_in != ours {
                keep_superseded(temp, target)?;
            }
            return Ok(());
        }
        put_in = going_in;
    }
    // Keep the newest save rather than delete it, and say where it is.
    let kept = temp.into_temp_path().keep().map_err(|e| e.error)?;
    Err(io::Error::other(format!(
        "the file kept changing while lb put a save back; the newest save is at {}",
        kept.display()
    )))
}

/// Keeps the save `temp` designates, superseded while lb put it back, as
/// `<file>.superseded-<unix ms>` beside `target`, and says so: a person merges it by hand if
/// the newer save lacks what it changed.
fn keep_superseded(temp: NamedTempFile, target: &Path) -> io::Result<()> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".superseded-{millis}"));
    let kept = target.with_file_name(name);
    temp.into_temp_path()
        .persist_noclobber(&kept)
        .map_err(|e| e.error)?;
    tracing::warn!(file = %target.display(), kept = %kept.display(), "a save landed while lb was putting back an earlier one; the earlier save is kept beside the file in case the newer one lacks its change");
    Ok(())
}

/// The fallback where files cannot be swapped: compare, then rename. NOTE: a save landing
/// between the read and the rename is replaced; only the exchange rules that out.
fn replace_by_rename(
    dir: &Path,
    target: &Path,
    temp: NamedTempFile,
    expected: &[u8],
) -> io::Result<Replaced> {
    if fs::read(target)? != expected {
        return Ok(Replaced::Changed);
    }
    let file = temp.persist(target).map_err(|e| e.error)?;
    let written = file.metadata()?;
    sync_dir(dir);
    Ok(Replaced::Written(written))
}

/// The new directory entries are in place and visible from here on; failing the write now
/// would report a change as not made. Some filesystems cannot fsync a directory at all.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Whether two `stat`s are of the same file with no write between them (short of one of the
/// same length within the same timestamp tick, which the content comparison catches).
#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    identity(a) == identity(b)
        && a.len() == b.len()
        && (a.mtime(), a.mtime_nsec()) == (b.mtime(), b.mtime_nsec())
        && (a.ctime(), a.ctime_nsec()) == (b.ctime(), b.ctime_nsec())
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Which file a directory entry designates.
#[cfg(unix)]
fn identity(metadata: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

#[cfg(not(unix))]
fn identity(_metadata: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Atomically swaps the files `a` and `b` designate (both must exist). Linux's `renameat2`
/// through rustix: the standard library has no exchange, and rustix's safe wrapper is already
/// in the tree (tempfile uses it).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Whether `exchange` failed because this kernel or filesystem has no exchange (`EINVAL` from
/// a filesystem without it, `ENOSYS` from a kernel before 3.15), not because of the files.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unsupported(error: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = error.raw_os_error();
    code == Some(Errno::INVAL.raw_os_error()) || code == Some(Errno::NOSYS.raw_os_error())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unsupported(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Unsupported
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

    /// `path` replaced with `contents` over the text it holds now.
    fn replace_now(path: &Path, contents: &str) -> Result<Replaced, WriteError> {
        replace(path, contents, &read(path).unwrap())
    }

    /// A base that says `path` held `text` when it was read, whatever it holds.
    fn base_claiming(path: &Path, text: &str) -> Base {
        Base {
            text: text.to_owned(),
            metadata: fs::metadata(path).unwrap(),
        }
    }

    fn is_symlink(path: &Path) -> bool {
        fs::symlink_metadata(path).unwrap().file_type().is_symlink()
    }

    /// The double race, step by step: save S1 is swapped out by lb's file, save S2 is made
    /// over lb's file before lb puts S1 back. S2, the newest, stays in place; S1 is kept
    /// beside it, not removed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_save_superseded_while_it_is_put_back_is_kept_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "S1: a person's save").unwrap();
        let mut lbs = tempfile::Builder::new()
            .prefix(".lb.toml.")
            .tempfile_in(dir.path())
            .unwrap();
        lbs.write_all(b"lb's edit").unwrap();
        exchange(lbs.path(), &path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "lb's edit");
        let editor = dir.path().join(".lb.toml.editor");
        fs::write(&editor, "lb's edit\nS2: a save based on lb's text").unwrap();
        fs::rename(&editor, &path).unwrap();

        put_back(lbs, &path).unwrap();

        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "lb's edit\nS2: a save based on lb's text"
        );
        let kept: Vec<String> = names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with("lb.toml.superseded-"))
            .collect();
        assert_eq!(kept.len(), 1, "{:?}", names(dir.path()));
        assert_eq!(
            fs::read_to_string(dir.path().join(&kept[0])).unwrap(),
            "S1: a person's save"
        );
        assert_eq!(names(dir.path()).len(), 2, "nothing else left behind");
    }

    #[test]
    fn replaces_content_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            replace_now(&path, "new").unwrap(),
            Replaced::Written(_)
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(names(dir.path()), ["lb.toml"], "temp file left behind");
    }

    /// The edit was computed from text a later save replaced: nothing is written over it,
    /// whether `stat` shows the save before the swap or only the content after it.
    #[test]
    fn a_file_that_changed_since_it_was_read_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "read earlier").unwrap();
        let base = read(&path).unwrap();
        fs::write(&path, "saved later").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let inode = |p: &Path| identity(&fs::metadata(p).unwrap());
        let before = inode(&path);
        for base in [base, base_claiming(&path, "read earlier")] {
            assert!(matches!(
                replace(&path, "edit", &base).unwrap(),
                Replaced::Changed
            ));
            assert_eq!(fs::read_to_string(&path).unwrap(), "saved later");
            assert_eq!(inode(&path), before, "the very same file is back in place");
            assert_eq!(mode(&path), 0o640);
            assert_eq!(names(dir.path()), ["lb.toml"], "temp file left behind");
        }
    }

    /// The written file's metadata is the file now in place, so a stat compares with it.
    #[test]
    fn the_metadata_returned_is_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "old").unwrap();
        let Replaced::Written(written) = replace_now(&path, "new!").unwrap() else {
            panic!("not written");
        };
        let now = fs::metadata(&path).unwrap();
        assert_eq!(identity(&written), identity(&now));
        assert_eq!(written.len(), 4);
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "old").unwrap();
        let base = read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            replace(&path, "new", &base).unwrap(),
            Replaced::Changed
        ));
        assert!(names(dir.path()).is_empty());
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

        replace_now(&root.join("relative.toml"), "one").unwrap();
        assert!(is_symlink(&root.join("relative.toml")));
        assert_eq!(
            fs::read_to_string(root.join("real/lb.toml")).unwrap(),
            "one"
        );

        replace_now(&root.join("absolute.toml"), "two").unwrap();
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

        replace_now(&root.join("lb.toml"), "new").unwrap();
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
    fn a_dangling_symlink_is_left_dangling() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("real.toml"), "old").unwrap();
        symlink("real.toml", root.join("lb.toml")).unwrap();
        let base = read(&root.join("lb.toml")).unwrap();
        fs::remove_file(root.join("real.toml")).unwrap();
        assert!(matches!(
            replace(&root.join("lb.toml"), "new", &base).unwrap(),
            Replaced::Changed
        ));
        assert!(is_symlink(&root.join("lb.toml")));
        assert_eq!(names(root), ["lb.toml"]);
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("b.toml", root.join("a.toml")).unwrap();
        symlink("a.toml", root.join("b.toml")).unwrap();
        let base = base_claiming(&dir.path().join("."), "old");
        let error = replace(&root.join("a.toml"), "new", &base).unwrap_err();
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
        let result = replace_now(&path, "new");
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
        let error = replace(&path, "new", &base_claiming(&blocker, "x")).unwrap_err();
        assert!(error.to_string().contains("file/lb.toml"), "{error}");
        assert_eq!(fs::read_to_string(&blocker).unwrap(), "x");
        assert_eq!(names(dir.path()), ["file"]);
    }

    #[test]
    fn a_failed_swap_removes_the_temp_file_and_names_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A directory swapped out cannot be read back as the expected text: it is swapped back
        // and nothing is left behind.
        fs::create_dir(root.join("real")).unwrap();
        fs::write(root.join("real/keep"), "x").unwrap();
        symlink("real", root.join("lb.toml")).unwrap();
        let base = base_claiming(&root.join("real"), "old");
        let error = replace(&root.join("lb.toml"), "new", &base).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("lb.toml (resolved to "), "{message}");
        assert!(message.ends_with(&error.source.to_string()), "{message}");
        assert_eq!(names(root), ["lb.toml", "real"]);
        assert_eq!(names(&root.join("real")), ["keep"]);
    }
}
