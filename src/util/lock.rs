//! A daemon's exclusive hold on its directory (`download`'s output directory, `ship`'s state
//! directory): an advisory lock on a file in it, released when the process ends however it
//! ends (the kernel drops the lock with the file descriptor).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Why a directory could not be held.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("another process holds {0}")]
    Held(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hold; released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// The open lock file; the lock lives as long as it does.
    _file: File,
}

impl DirLock {
    /// Holds `dir` through its file `name`, or says who does.
    pub(crate) fn acquire(dir: &Path, name: &str) -> Result<Self, LockError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                what: "cannot open the lock file",
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
                what: "cannot lock",
                path,
                source,
            }),
        }
    }

    /// Whether some process holds `dir` now (for `--status`).
    pub(crate) fn is_held(dir: &Path, name: &str) -> bool {
        let Ok(f) = File::open(dir.join(name)) else {
            return false;
        };
        matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
    }
}
