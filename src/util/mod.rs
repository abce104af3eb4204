//! Plumbing shared by several commands, beneath all of them: time as users write it
//! ([`time`]), waits between tries ([`backoff`]), crash-safe file writes ([`durable`]), the
//! daemons' metrics endpoint ([`metrics_http`]), where state lives by default
//! ([`state_home`]), a stable hash ([`fnv1a`]) and an error with its causes, each once
//! ([`chain`]). Nothing here knows Docker, AWS or a command.

pub(crate) mod backoff;
pub(crate) mod durable;
pub(crate) mod lock;
pub(crate) mod metrics_http;
pub(crate) mod time;

/// Where dockwatch keeps its state by default (checkpoints, spools, records), never the
/// working directory: `$XDG_STATE_HOME/dockwatch` when set, `/var/lib/dockwatch` for root
/// (system services), else `~/.local/state/dockwatch` (the XDG base directory default).
pub(crate) fn state_home() -> std::path::PathBuf {
    use std::path::PathBuf;
    let env = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(x) = env("XDG_STATE_HOME") {
        return x.join("dockwatch");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/dockwatch");
    }
    match env("HOME") {
        Some(h) => h.join(".local/state/dockwatch"),
        None => std::env::temp_dir().join("dockwatch"),
    }
}

/// FNV-1a, 64 bits: a stable, dependency-free hash for names and ids that must not change
/// between versions (file names of long streams, dedupe keys, TLS identities).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// This process's standard input in pieces of at most `piece` bytes, read by a thread of its
/// own (a blocking read cannot be cancelled; the thread ends with the process) into a channel
/// of four pieces, so a reader that stops holds up only this copy. The channel ends at the
/// input's end or a read error.
pub(crate) fn stdin_pieces(piece: usize) -> std::io::Result<tokio::sync::mpsc::Receiver<Vec<u8>>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; piece];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })?;
    Ok(rx)
}

/// The whole chain of an error's messages, `a: b: c`, each cause once: a message that
/// already holds its cause's text (thiserror's `{source}` in the message) does not repeat it.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

/// Sleeps until `at`, or forever without one: a `select!` arm for an optional deadline.
pub(crate) async fn sleep_until(at: Option<impl Into<tokio::time::Instant>>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Rows under a header, each column as wide as its widest cell (`--status` tables).
pub(crate) fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let head = head.map(String::from);
    let mut widths = head.clone().map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    std::iter::once(&head)
        .chain(rows.iter())
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            line.join("  ").trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot create '{path}': {source}")]
        struct WithIt {
            path: String,
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("the spool failed")]
        struct Outer(#[source] WithIt);
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = WithIt {
            path: "/x".into(),
            source: io(),
        };
        assert_eq!(chain(&e), format!("cannot create '/x': {}", io()));
        let outer = Outer(WithIt {
            path: "/x".into(),
            source: io(),
        });
        assert_eq!(
            chain(&outer),
            format!("the spool failed: cannot create '/x': {}", io())
        );
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
