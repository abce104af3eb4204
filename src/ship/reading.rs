//! How `dockwatch ship` reads each container: the engine's `json-file` log files where this
//! process can read them (`docker::files`), else the logs endpoint; containers whose logging
//! driver keeps no log the engine can give back are skipped, with the reason.
//!
//! Decided once at start for the host (said in one line: which path, and why not the files
//! when not) and per container at its first sight (shown in `--status`):
//! - files: `--read-path files` (the default), the engine on a local Unix socket, and
//!   `<root>/containers` readable (root, or `CAP_DAC_READ_SEARCH`);
//! - the logs endpoint: `--read-path logs`, a remote or rootless engine, files not readable,
//!   or the `local` driver (its protobuf files are not read by dockwatch);
//! - skipped: `none`, `journald`, `syslog`, `awslogs`, … (the engine keeps no json-file or
//!   local log of them: `docker logs` of such a container reads a cache at best).

use std::path::PathBuf;

use crate::config::ship::HostConfig;
use crate::docker::events::{ContainerFacts, EngineInfo};
use crate::docker::files::{self, FilesError, LogFiles, Lost, Watcher};

/// The files path for the host: the watcher and the engine's root directory.
#[derive(Clone)]
pub(crate) struct FilesHost {
    watcher: Watcher,
    root: PathBuf,
}

/// The host's read path, and the line that says it.
pub(crate) fn files_of(cfg: &HostConfig, engine: &EngineInfo) -> (Option<FilesHost>, String) {
    let dir = engine.root_dir.join("containers");
    let why_not = if !cfg.read_files {
        "--read-path logs".to_string()
    } else if crate::docker::logs::unix_socket().is_none() {
        "the engine is not on a local Unix socket (DOCKER_HOST)".to_string()
    } else {
        match std::fs::read_dir(&dir) {
            Ok(_) => match Watcher::start() {
                Ok(watcher) => {
                    let note = format!("reading the engine's log files in {}", dir.display());
                    let root = engine.root_dir.clone();
                    return (Some(FilesHost { watcher, root }), note);
                }
                Err(e) => format!("inotify: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => format!(
                "{} is not readable by this process (it needs root or CAP_DAC_READ_SEARCH)",
                dir.display()
            ),
            Err(e) => format!(
                "{}: {e} (a rootless engine, or one in another mount namespace)",
                dir.display()
            ),
        }
    };
    (
        None,
        format!("reading through the engine's logs endpoint: {why_not}"),
    )
}

/// How one container is read.
pub(crate) enum Read {
    /// Its log files, held open from now on.
    Files(Box<LogFiles>),
    /// The logs endpoint, and why not the files.
    Logs(String),
    /// Not shipped, and why.
    Skip(String),
    /// Removed already.
    Gone,
}

impl Read {
    /// As `--status` shows it.
    pub(crate) fn shown(&self) -> String {
        match self {
            Read::Files(_) => "files".into(),
            Read::Logs(why) => format!("logs endpoint ({why})"),
            Read::Skip(why) => format!("skipped ({why})"),
            Read::Gone => "removed".into(),
        }
    }
}

/// A created container's log files, held from now on; `None` when they cannot be (its
/// directory gone already, not readable: the daemon's look at it says why).
pub(crate) fn hold(host: &FilesHost, id: &str) -> Option<Box<LogFiles>> {
    LogFiles::open(&host.watcher, &files::log_path(&host.root, id))
        .ok()
        .map(Box::new)
}

/// How to read `facts`' container (see the module doc); `held`: its files, opened at its
/// creation.
pub(crate) fn choose(
    files: Option<&FilesHost>,
    default_driver: &str,
    facts: &ContainerFacts,
    held: Option<Box<LogFiles>>,
) -> Read {
    let driver = if facts.log_driver.is_empty() {
        default_driver
    } else {
        facts.log_driver.as_str()
    };
    match (driver, files) {
        ("json-file", Some(host)) => {
            if let Some(f) = held {
                return Read::Files(f);
            }
            let path = files::log_path(&host.root, &facts.id);
            match LogFiles::open(&host.watcher, &path) {
                Ok(f) => Read::Files(Box::new(f)),
                Err(e) if e.is_gone() => Read::Gone,
                Err(e) => Read::Logs(short(&e)),
            }
        }
        ("json-file", None) => Read::Logs("the files are not read on this host".into()),
        ("local", _) => Read::Logs("the local driver's files are not read by dockwatch".into()),
        (other, _) => Read::Skip(format!(
            "its logging driver is {other}: dockwatch ship reads json-file and local logs"
        )),
    }
}

fn short(e: &FilesError) -> String {
    if e.is_permission() {
        "its log files are not readable by this process".into()
    } else {
        e.to_string()
    }
}

/// The log line for output found rotated away unread.
pub(crate) fn describe_lost(name: &str, id: &str, l: &Lost) -> String {
    let at = |ns: Option<i64>| {
        ns.map_or_else(|| "?".to_string(), crate::docker::logs::format_rfc3339_nano)
    };
    let files = if l.files > 0 {
        format!("{} whole file(s)", l.files)
    } else {
        "part of the log".to_string()
    };
    format!(
        "container {} ({name}): {files} {}: what it wrote after {} and before {} is not delivered",
        crate::docker::short_id(id),
        l.why,
        at(l.after_ns),
        at(l.before_ns),
    )
}
