//! One inotify instance for the whole host, and a task that opens each container's new log
//! file the moment the engine creates it.
//!
//! Why one instance: the kernel allows 128 inotify instances per user by default
//! (`fs.inotify.max_user_instances`), far fewer than the containers of a busy host; watches
//! are plenty (`max_user_watches`). Each followed container is one watch, on its directory
//! (`/var/lib/docker/containers/<id>/`): the directory exists from `create` on, the log file
//! only from the first start, and rotation replaces the file, so the directory is what stays.
//!
//! Why the watcher opens files itself, on a thread of its own, and not the reader: a rotated file is renamed
//! (`-json.log` → `.1` → …) and, past `max-file`, deleted. A reader busy with a backlog (or
//! waiting on CloudWatch) would come to a new file too late; an open descriptor keeps even a
//! deleted file readable to its end. So the watcher thread, which does nothing else (an async
//! task was measured to fall behind a flood's rotations on 2 busy cores), opens the file at its
//! `IN_CREATE`, and hands the descriptor to the container's [`Slot`], where the reader takes it
//! when it has finished the older ones. When a create comes late (the event queue overflowed,
//! or the file was rotated again meanwhile), the file before the new one (`.1`) is opened too
//! when it is not held; a create whose file was never held is counted as a file lost (every
//! create is one file, so creates beyond the files opened are files rotated away unseen). A
//! slot holds at most [`MAX_WAITING`] files; past that a file is not kept and counted too.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use inotify::{EventMask, Inotify, WatchMask, Watches};
use tokio::sync::Notify;

/// Files opened for a slot and not yet taken by its reader, at most.
pub(crate) const MAX_WAITING: usize = 256;

/// The host's watcher; cheap to clone.
#[derive(Clone)]
pub(crate) struct Watcher {
    shared: Arc<Shared>,
}

struct Shared {
    watches: Mutex<Watches>,
    /// Slots by watch descriptor; one descriptor per directory, so a list.
    slots: Mutex<HashMap<i32, Vec<Arc<Slot>>>>,
    /// Slots by the one-shot write watch of their current file (see [`Registration::arm`]).
    armed: Mutex<HashMap<i32, Arc<Slot>>>,
}

/// What the watcher knows of one container's log file.
pub(crate) struct Slot {
    wd: inotify::WatchDescriptor,
    name: OsString,
    path: PathBuf,
    state: Mutex<SlotState>,
    changed: Notify,
}

#[derive(Default)]
pub(crate) struct SlotState {
    /// Newer files opened by the watcher, oldest first.
    pub(crate) opened: VecDeque<(File, u64)>,
    /// The newest file's inode known to this slot (opened here or by the reader).
    pub(crate) newest: Option<u64>,
    /// The engine closed the file this many times (a container's exit, a rotation).
    pub(crate) closes: u64,
    /// The log file or its directory was removed: the container was removed.
    pub(crate) gone: bool,
    /// Files not kept: [`MAX_WAITING`] were waiting already, or rotated away before the
    /// watcher could open them.
    pub(crate) dropped: u64,
    /// Files opened beyond the creates seen so far (a late create found two): the creates
    /// still to come that they account for.
    surplus: u64,
    /// The file the reader opened at registration, whose create may still be in the queue.
    pub(crate) initial: Option<u64>,
}

impl Slot {
    /// Waits until something happened to the file (a write, a new file, a close, removal).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().expect("slot")
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the log file as it is now (after the watch was added, so that no create is
    /// missed in between), unless its inode is held already. The files the reader starts
    /// with are opened through here too.
    pub(crate) fn open_current(&self) -> io::Result<Option<(File, u64)>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ino = f.metadata()?.ino();
        Ok(Some((f, ino)))
    }

    /// A new file appeared under the log's name (`real`: a create event, not a look after a
    /// queue overflow): keep it, and `.1` when that one was never held (the create came after
    /// a second rotation). Counts what was missed (see the module doc).
    fn created(&self, real: bool) {
        let mut st = self.lock();
        let before = st.newest;
        let mut new = 0;
        if let Ok(Some((f, ino))) = self.open_current()
            && Some(ino) != before
        {
            if before.is_some() {
                let older = PathBuf::from(format!("{}.1", self.path.display()));
                if let Ok(o) = File::open(&older)
                    && let Ok(m) = o.metadata()
                    && Some(m.ino()) != before
                    && st.opened.iter().all(|(_, i)| *i != m.ino())
                {
                    push(&mut st, o, m.ino());
                    new += 1;
                }
            }
            push(&mut st, f, ino);
            st.newest = Some(ino);
            new += 1;
        }
        account(&mut st, new, real);
    }
}

/// Counts a create that opened `new` files (`real`: a create event, not a look after a queue
/// overflow): every create is one file, so a create that found nothing new is a file missed,
/// unless an earlier late one opened two (its `.1` and itself) or it is the create of the
/// file the reader opened at registration.
fn account(st: &mut SlotState, new: u64, real: bool) {
    if !real {
        st.surplus += new;
        return;
    }
    match new {
        0 if st.initial.take().is_some() => {}
        0 if st.surplus > 0 => st.surplus -= 1,
        0 => st.dropped += 1,
        n => {
            // Events come in order: the initial file's create, if any, came before.
            st.initial = None;
            st.surplus += n - 1;
        }
    }
}

fn push(st: &mut SlotState, f: File, ino: u64) {
    if st.opened.len() >= MAX_WAITING {
        st.dropped += 1;
    } else {
        st.opened.push_back((f, ino));
    }
}

/// A slot registered with the watcher; removing it drops the watch when it was the last.
pub(crate) struct Registration {
    pub(crate) slot: Arc<Slot>,
    watcher: Watcher,
}

impl Registration {
    /// Asks for one wake-up at the next write to the log file (a one-shot watch on it): the
    /// reader arms it when it has read everything, then looks once more before it waits.
    /// Writes are not watched otherwise: a watch on every write woke the watcher and the
    /// reader once per line (a third of a flood's CPU went to switching between them).
    pub(crate) fn arm(&self) {
        let mask = WatchMask::MODIFY | WatchMask::ONESHOT;
        let shared = &self.watcher.shared;
        let mut armed = shared.armed.lock().expect("armed");
        if let Ok(wd) = shared
            .watches
            .lock()
            .expect("watches")
            .add(&self.slot.path, mask)
        {
            armed.insert(wd.get_watch_descriptor_id(), self.slot.clone());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watcher
            .shared
            .armed
            .lock()
            .expect("armed")
            .retain(|_, s| !Arc::ptr_eq(s, &self.slot));
        let id = self.slot.wd.get_watch_descriptor_id();
        let mut slots = self.watcher.shared.slots.lock().expect("slots");
        let last = match slots.get_mut(&id) {
            Some(list) => {
                list.retain(|s| !Arc::ptr_eq(s, &self.slot));
                list.is_empty()
            }
            None => false,
        };
        if last {
            slots.remove(&id);
            // Fails when the directory is gone already (the watch went with it).
            let _ = self
                .watcher
                .shared
                .watches
                .lock()
                .expect("watches")
                .remove(self.slot.wd.clone());
        }
    }
}

impl Watcher {
    /// The host's inotify instance and its thread.
    pub(crate) fn start() -> io::Result<Watcher> {
        let mut inotify = Inotify::init()?;
        let shared = Arc::new(Shared {
            watches: Mutex::new(inotify.watches()),
            slots: Mutex::new(HashMap::new()),
            armed: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("dockwatch-inotify".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                let mut buf = vec![0u8; 64 * 1024];
                let fd = inotify.as_raw_fd();
                loop {
                    // poll, then a non-blocking read: read_events_blocking costs four fcntl
                    // calls per read.
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        break;
                    }
                    let events = match inotify.read_events(&mut buf) {
                        Ok(e) => e,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => break,
                    };
                    let Some(shared) = weak.upgrade() else { break };
                    for e in events {
                        dispatch(&shared, e.wd.get_watch_descriptor_id(), e.mask, e.name);
                    }
                }
            })?;
        Ok(Watcher { shared })
    }

    /// Watches the directory of the log file `path` (which need not exist yet).
    pub(crate) fn register(&self, path: &Path) -> io::Result<Registration> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().unwrap_or_default().to_os_string();
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::ONLYDIR;
        let mut slots = self.shared.slots.lock().expect("slots");
        let wd = self
            .shared
            .watches
            .lock()
            .expect("watches")
            .add(dir, mask)?;
        let slot = Arc::new(Slot {
            wd: wd.clone(),
            name,
            path: path.to_path_buf(),
            state: Mutex::new(SlotState::default()),
            changed: Notify::new(),
        });
        slots
            .entry(wd.get_watch_descriptor_id())
            .or_default()
            .push(slot.clone());
        Ok(Registration {
            slot,
            watcher: self.clone(),
        })
    }
}

fn dispatch(shared: &Shared, wd: i32, mask: EventMask, name: Option<&std::ffi::OsStr>) {
    {
        let mut armed = shared.armed.lock().expect("armed");
        if let Some(s) = armed.get(&wd) {
            s.changed.notify_one();
            // One-shot: the kernel removes the watch after its event (IN_IGNORED follows).
            if mask.contains(EventMask::IGNORED) {
                armed.remove(&wd);
            }
            return;
        }
    }
    let slots = shared.slots.lock().expect("slots");
    if mask.contains(EventMask::Q_OVERFLOW) {
        // Events were lost: every slot looks at its file again.
        for s in slots.values().flatten() {
            s.created(false);
            s.changed.notify_one();
        }
        return;
    }
    let Some(list) = slots.get(&wd) else { return };
    for s in list {
        if mask.intersects(EventMask::DELETE_SELF | EventMask::IGNORED) {
            s.lock().gone = true;
        } else if name != Some(s.name.as_os_str()) {
            continue;
        } else if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            s.created(true);
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            s.lock().closes += 1;
        } else if mask.contains(EventMask::DELETE) {
            // The log itself unlinked: the container removed (rotation renames it). The
            // directory's own IN_DELETE_SELF comes only once the held files are closed: an
            // open file pins its directory.
            s.lock().gone = true;
        }
        s.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    async fn settle(slot: &Slot, until: impl Fn(&SlotState) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !until(&slot.lock()) {
                slot.changed().await;
            }
        })
        .await
        .expect("the watcher saw it");
    }

    #[test]
    fn creates_beyond_the_files_opened_are_files_missed() {
        let mut st = SlotState {
            initial: Some(7),
            ..SlotState::default()
        };
        // The reader's file's create, then a rotation seen in time: nothing missed.
        account(&mut st, 0, true);
        account(&mut st, 1, true);
        // One late create found .1 and the new file (2), the next create is accounted for.
        account(&mut st, 2, true);
        account(&mut st, 0, true);
        assert_eq!(st.dropped, 0);
        // Three rotations, the first create seen after the third: .1 and the current one
        // held, the first of the three gone unseen.
        account(&mut st, 2, true);
        account(&mut st, 0, true);
        account(&mut st, 0, true);
        assert_eq!(st.dropped, 1);
        // A look after an overflow is no create.
        account(&mut st, 1, false);
        account(&mut st, 0, true);
        assert_eq!(st.dropped, 1);
    }

    #[tokio::test]
    async fn opens_each_new_file_and_sees_closes_and_removal() {
        let dir = std::env::temp_dir().join(format!("dockwatch-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c-json.log");
        let w = Watcher::start().unwrap();
        let reg = w.register(&path).unwrap();
        // Created, written, closed; then rotated twice as the engine does.
        let mut f = File::create(&path).unwrap();
        f.write_all(b"a\n").unwrap();
        drop(f);
        settle(&reg.slot, |s| s.opened.len() == 1 && s.closes == 1).await;
        for n in 0..2 {
            std::fs::rename(&path, dir.join("c-json.log.1")).unwrap();
            let mut f = File::create(&path).unwrap();
            writeln!(f, "{n}").unwrap();
        }
        settle(&reg.slot, |s| s.opened.len() == 3).await;
        let inos: Vec<u64> = reg.slot.lock().opened.iter().map(|(_, i)| *i).collect();
        let mut unique = inos.clone();
        unique.dedup();
        assert_eq!(unique.len(), 3, "three distinct files, oldest first");
        // An unrelated name in the directory is not ours.
        File::create(dir.join("other")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        settle(&reg.slot, |s| s.gone).await;
        assert_eq!(reg.slot.lock().opened.len(), 3);
        drop(reg);
        assert!(w.shared.slots.lock().unwrap().is_empty());
    }
}
