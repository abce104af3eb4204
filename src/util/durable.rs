//! Crash-safe file writes, in one place.
//!
//! [`replace`] is the atomic replacement every state file uses (checkpoint, spool, download
//! state, on-upload records): the bytes go to a temporary file in the same directory, which is
//! `fsync`ed and renamed over the target; then the directory is `fsync`ed so the rename itself
//! survives a power loss. A crash at any point leaves either the old file or the new one,
//! never a mix: rename within one directory is atomic on POSIX file systems. A stale
//! temporary file (a crash before the rename) is overwritten by the next write.
//!
//! [`sync_dir`] makes a new name in a directory (a created or renamed file) durable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably (see the module doc). The directory must
/// exist.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, |w| w.write_all(bytes))
}

/// [`replace`] for contents written piece by piece (a spool of many events) through a buffer.
pub(crate) fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temporary_name(path);
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `dir/.NAME.tmp` beside `path`: hidden, and in the same directory (rename is atomic only
/// there).
fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".{name}.tmp"))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_writes_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("dw-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        replace(&p, b"old").unwrap();
        replace(&p, b"new, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new, longer");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(
            temporary_name(Path::new("a.json")),
            Path::new("./.a.json.tmp")
        );
    }
}
