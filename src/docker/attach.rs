//! The attach stream: the container's output bytes exactly as written, for
//! `--invalid-utf8 escape`.
//!
//! Why two streams: the logs endpoint ([`super::logs`]) stays the source of order, timestamps,
//! positions and durability, but the `json-file` driver stores each invalid UTF-8 byte as
//! U+FFFD before any reader sees it. The attach stream carries the same bytes unchanged.
//! [`Tap`] reads it, from before the container starts, into one bounded buffer per source,
//! and [`Tap::restore`] turns each log frame back into the bytes it was made from by walking
//! the frame and the raw bytes together the way Docker's encoder replaced them ([`align`]).
//!
//! Bounds and cost: the buffers hold at most [`TAP_CAP`] bytes. When the log reader falls that
//! far behind (CloudWatch slower than the container), the tap stops reading and the engine
//! holds up the container's writes until the reader catches up: in this mode a slow CloudWatch
//! slows the container, as Docker's own awslogs driver does in its default blocking mode. The
//! engine also does the work of two readers.
//!
//! Fallback, never loss: when the raw bytes cannot be matched (the attach connection broke,
//! the engine restarted, a frame's bytes never came) the tap turns off and every later frame
//! is shipped from the log as it is, invalid bytes replaced; the summary counts those frames.
//! `dockwatch resume` after a crash has no attach stream and ships the rest the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::DockerError;
use super::logs::Frame;
use crate::docker::Source;

/// Raw bytes held at most (both sources together) before the tap waits for the log reader.
pub(crate) const TAP_CAP: usize = 16 * 1024 * 1024;
/// How long a frame may wait for its raw bytes before the tap gives up (they come from the
/// same engine copier as the frame, normally within milliseconds).
const WAIT: Duration = Duration::from_secs(30);

/// U+FFFD as UTF-8: what Docker's `json-file` encoder writes for each invalid byte.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// How a log frame lines up with the raw bytes of its source.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// The frame was made from the first `n` raw bytes.
    Matched(usize),
    /// The raw bytes seen so far are a prefix of the frame's: wait for more.
    NeedMore,
    /// The frame was not made from these bytes.
    Mismatch,
}

/// What starts `b`: a valid character of `n` bytes, an invalid byte, or the beginning of a
/// character cut by the end of `b`.
enum CharAt {
    Valid(usize),
    Invalid,
    Incomplete,
}

fn char_at(b: &[u8]) -> CharAt {
    let head = &b[..b.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.valid_up_to() > 0 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).expect("valid prefix")
        }
        Err(e) => {
            return match e.error_len() {
                Some(_) => CharAt::Invalid,
                None => CharAt::Incomplete,
            };
        }
    };
    CharAt::Valid(valid.chars().next().map_or(1, char::len_utf8))
}

/// What the `json-file` driver stores for one message's `raw` bytes: Go's replacement, one
/// U+FFFD per invalid byte (an incomplete character at the end of the message included).
pub(crate) fn as_engine_stores(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut j = 0;
    while j < raw.len() {
        match std::str::from_utf8(&raw[j..]) {
            Ok(_) => {
                out.extend_from_slice(&raw[j..]);
                break;
            }
            Err(e) if e.valid_up_to() > 0 => {
                out.extend_from_slice(&raw[j..j + e.valid_up_to()]);
                j += e.valid_up_to();
            }
            Err(_) => {
                out.extend_from_slice(REPLACEMENT);
                j += 1;
            }
        }
    }
    out
}

/// Lines up a log `frame` (as the engine stored it: each invalid byte replaced by U+FFFD, one
/// per byte, as Go's decoder counts them) with `raw`, the unconsumed bytes of the same source.
/// `raw_complete`: no more raw bytes will come.
///
/// Where a long line was cut by Docker's 16 KiB split in the middle of a character, the
/// engine stored the cut bytes as U+FFFDs too; each stands for one raw byte here as well.
pub(crate) fn align(frame: &[u8], raw: &[u8], raw_complete: bool) -> Align {
    let (mut i, mut j) = (0, 0);
    while i < frame.len() {
        // Fast path: the common prefix, up to its last whole character.
        let common = frame[i..]
            .iter()
            .zip(&raw[j..])
            .take_while(|(a, b)| a == b)
            .count();
        if common > 0 {
            let whole = match std::str::from_utf8(&raw[j..j + common]) {
                Ok(_) => common,
                Err(e) => e.valid_up_to(),
            };
            if whole > 0 {
                i += whole;
                j += whole;
                continue;
            }
        }
        if j >= raw.len() {
            return if raw_complete {
                Align::Mismatch
            } else {
                Align::NeedMore
            };
        }
        let replaced = frame[i..].starts_with(REPLACEMENT);
        // Whether the frame's U+FFFD stands for the raw byte at `j`: a character cut by a
        // 16 KiB split (its first bytes end this frame) or an invalid byte, one per raw byte.
        let one_replaced_byte = match char_at(&raw[j..]) {
            CharAt::Valid(n) if frame[i..].starts_with(&raw[j..j + n]) => {
                i += n;
                j += n;
                continue;
            }
            CharAt::Valid(_) | CharAt::Invalid => replaced,
            // The start of a character still arriving: decided once it cannot become a
            // genuine U+FFFD, or when no more bytes will come.
            CharAt::Incomplete
                if replaced && (raw_complete || !REPLACEMENT.starts_with(&raw[j..])) =>
            {
                true
            }
            CharAt::Incomplete if !raw_complete => return Align::NeedMore,
            CharAt::Incomplete => false,
        };
        if !one_replaced_byte {
            return Align::Mismatch;
        }
        i += REPLACEMENT.len();
        j += 1;
    }
    Align::Matched(j)
}

/// The attach stream's chunks, by source.
type RawStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<(Source, Bytes), DockerError>> + Send>,
>;

/// What the attach reader and [`Tap::restore`] share.
struct Shared {
    state: Mutex<TapState>,
    /// Raw bytes arrived (or the stream ended).
    produced: Notify,
    /// Raw bytes were consumed (the reader may be waiting under the cap).
    consumed: Notify,
}

#[derive(Default)]
struct TapState {
    /// Unconsumed raw bytes of stdout and stderr.
    bufs: [BytesMut; 2],
    /// The attach stream ended, and why when it broke.
    ended: Option<Option<String>>,
}

impl TapState {
    /// Raw bytes held, both sources together (bounded by [`TAP_CAP`]).
    fn buffered(&self) -> usize {
        self.bufs[0].len() + self.bufs[1].len()
    }
}

/// The attach stream of one container, buffered (see the module doc).
pub(crate) struct Tap {
    shared: Arc<Shared>,
    /// Reads the attach stream into the buffers; aborted when the tap is dropped.
    task: tokio::task::JoinHandle<()>,
    /// Why the tap turned off, once it did.
    off: Option<String>,
    /// Frames shipped as the engine stored them because the tap was off.
    pub(crate) fallback_frames: u64,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Attaches to the container's stdout and stderr. Call before starting the container, so
    /// that no byte is missed.
    pub(crate) async fn attach(
        docker: &bollard::Docker,
        id: &str,
        tty: bool,
    ) -> Result<Self, DockerError> {
        let stream: RawStream = match super::logs::unix_socket() {
            Some(socket) => {
                let v = docker.client_version();
                let path = format!(
                    "/v{}.{}/containers/{id}/attach?stream=1&stdout=1&stderr=1",
                    v.major_version, v.minor_version
                );
                let raw = super::raw_logs::RawLogs::attach(&socket, &path, tty).await?;
                Box::pin(futures_util::stream::unfold(raw, |mut raw| async move {
                    raw.next().await.map(|item| (item, raw))
                }))
            }
            None if !tty => {
                use bollard::container::LogOutput;
                let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
                    .stream(true)
                    .stdout(true)
                    .stderr(true)
                    .build();
                let res = docker
                    .attach_container(id, Some(opts))
                    .await
                    .map_err(|e| DockerError::api("attach to the container", &e))?;
                Box::pin(res.output.filter_map(|item| {
                    std::future::ready(match item {
                        Ok(LogOutput::StdOut { message }) => Some(Ok((Source::Stdout, message))),
                        Ok(LogOutput::StdErr { message }) => Some(Ok((Source::Stderr, message))),
                        Ok(LogOutput::Console { message }) => Some(Ok((Source::Stdout, message))),
                        Ok(LogOutput::StdIn { .. }) => None,
                        Err(e) => Some(Err(DockerError::api("read the attach stream", &e))),
                    })
                }))
            }
            None => {
                return Err(DockerError::Api {
                    context: "attach to the container".into(),
                    reason: "--invalid-utf8 escape with --tty needs the engine's Unix socket (DOCKER_HOST=unix://...); use --invalid-utf8 replace".into(),
                });
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(TapState::default()),
            produced: Notify::new(),
            consumed: Notify::new(),
        });
        let task = tokio::spawn(pump(stream, shared.clone()));
        Ok(Self {
            shared,
            task,
            off: None,
            fallback_frames: 0,
        })
    }

    /// Why the tap turned off, if it did.
    pub(crate) fn off_reason(&self) -> Option<&str> {
        self.off.as_deref()
    }

    /// The bytes `frame` was made from: the raw bytes while the tap works, else the frame's
    /// own (counted in [`Tap::fallback_frames`]).
    pub(crate) async fn restore(&mut self, frame: &Frame) -> Bytes {
        if self.off.is_some() {
            return self.restore_off(frame);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let verdict = {
                let mut st = self.shared.state.lock().expect("tap lock");
                let total = st.buffered();
                let complete = st.ended.is_some();
                let buf = &mut st.bufs[frame.source.index()];
                match align(&frame.data, buf, complete) {
                    Align::Matched(n) => Ok(Some(buf.split_to(n).freeze())),
                    Align::NeedMore if total < TAP_CAP => Ok(None),
                    Align::NeedMore => Err(
                        "the raw bytes of a log frame were not among the buffered ones".to_string(),
                    ),
                    Align::Mismatch => Err(match &st.ended {
                        Some(Some(why)) => format!("the attach stream broke ({why})"),
                        Some(None) => "the attach stream ended before the log did".to_string(),
                        None => "a log frame did not match the raw bytes".to_string(),
                    }),
                }
            };
            match verdict {
                Ok(Some(raw)) => {
                    self.shared.consumed.notify_one();
                    return raw;
                }
                Ok(None) => {
                    if tokio::time::timeout_at(deadline, self.shared.produced.notified())
                        .await
                        .is_err()
                    {
                        self.turn_off("the raw bytes of a log frame did not come".into());
                        return self.restore_off(frame);
                    }
                }
                Err(why) => {
                    self.turn_off(why);
                    return self.restore_off(frame);
                }
            }
        }
    }

    fn restore_off(&mut self, frame: &Frame) -> Bytes {
        self.fallback_frames += 1;
        frame.data.clone()
    }

    fn turn_off(&mut self, why: String) {
        tracing::warn!(
            "--invalid-utf8 escape: {why}; the rest of the output is shipped as the engine stored it (invalid bytes replaced)"
        );
        self.off = Some(why);
        self.task.abort();
        let mut st = self.shared.state.lock().expect("tap lock");
        st.bufs = Default::default();
    }
}

/// Reads the attach stream into the buffers, waiting while they hold [`TAP_CAP`] bytes.
async fn pump(mut stream: RawStream, shared: Arc<Shared>) {
    loop {
        loop {
            let total = shared.state.lock().expect("tap lock").buffered();
            if total < TAP_CAP {
                break;
            }
            tracing::debug!(
                "attach buffer full ({total} bytes): the container waits for the reader"
            );
            shared.consumed.notified().await;
        }
        let item = stream.next().await;
        let ended = {
            let mut st = shared.state.lock().expect("tap lock");
            st.ended = match item {
                Some(Ok((source, bytes))) => {
                    st.bufs[source.index()].extend_from_slice(&bytes);
                    None
                }
                Some(Err(e)) => Some(Some(e.to_string())),
                None => Some(None),
            };
            st.ended.is_some()
        };
        shared.produced.notify_one();
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn go_replace(raw: &[u8]) -> Vec<u8> {
        as_engine_stores(raw)
    }

    #[test]
    fn valid_frames_match_their_bytes() {
        assert_eq!(align(b"abc\n", b"abc\ndef", false), Align::Matched(4));
        assert_eq!(align(b"abc\n", b"ab", false), Align::NeedMore);
        assert_eq!(align(b"abc\n", b"ab", true), Align::Mismatch);
        assert_eq!(align(b"abc\n", b"abd\n", false), Align::Mismatch);
    }

    #[test]
    fn replaced_bytes_are_found_again() {
        let raw = b"a\xffb\xe2\x82\n\xef\xbf\xbd\nnext";
        let stored = go_replace(&raw[..6]);
        assert_eq!(align(&stored, raw, false), Align::Matched(6));
        // A genuine U+FFFD is itself.
        assert_eq!(
            align("\u{FFFD}\n".as_bytes(), &raw[6..], false),
            Align::Matched(4)
        );
    }

    #[test]
    fn character_cut_by_a_split_is_one_replacement_per_byte() {
        // "€" cut after two bytes by a 16 KiB split: the first frame ends with two U+FFFDs,
        // the next starts with one.
        let raw = "x€y\n".as_bytes();
        let first = go_replace(&raw[..3]);
        let second = go_replace(&raw[3..]);
        assert_eq!(align(&first, raw, false), Align::Matched(3));
        assert_eq!(align(&second, &raw[3..], false), Align::Matched(3));
    }

    #[test]
    fn incomplete_raw_waits_when_it_could_be_a_real_replacement_character() {
        let stored = "\u{FFFD}\n".as_bytes();
        assert_eq!(align(stored, b"\xef\xbf", false), Align::NeedMore);
        // E2 can never start U+FFFD: it is one replaced byte whatever follows.
        assert_eq!(align(stored, b"\xe2", false), Align::NeedMore);
        assert_eq!(align(stored, b"\xe2\n", false), Align::Matched(2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any output cut into frames anywhere (line ends, Docker's splits, even inside a
        /// character), stored the engine's way, is restored byte for byte, frame by frame.
        #[test]
        fn stored_frames_restore_the_raw_bytes(
            data in prop::collection::vec(prop_oneof![
                3 => any::<u8>(),
                2 => prop::sample::select(vec![b'\n', b'a', 0xEF, 0xBF, 0xBD, 0xE2, 0x82, 0xAC, 0xC3, 0xF0, 0x9F]),
            ], 0..300),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            arrivals in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.push(data.len());
            points.sort_unstable();
            points.dedup();
            let mut arrive: Vec<usize> = arrivals.iter().map(|i| i.index(data.len() + 1)).collect();
            arrive.push(data.len());
            arrive.sort_unstable();

            let mut got = Vec::new();
            let (mut start, mut consumed, mut avail_i) = (0usize, 0usize, 0usize);
            for &end in &points {
                if end == start { continue; }
                let frame = go_replace(&data[start..end]);
                loop {
                    let avail = arrive[avail_i];
                    let complete = avail == data.len();
                    match align(&frame, &data[consumed..avail.max(consumed)], complete) {
                        Align::Matched(n) => {
                            got.extend_from_slice(&data[consumed..consumed + n]);
                            consumed += n;
                            break;
                        }
                        Align::NeedMore => { prop_assert!(avail_i + 1 < arrive.len()); avail_i += 1; }
                        Align::Mismatch => {
                            // Only a genuine U+FFFD cut by a split is ambiguous.
                            prop_assert!(data.windows(3).any(|w| w == REPLACEMENT), "mismatch");
                            return Ok(());
                        }
                    }
                }
                start = end;
            }
            if got != data {
                prop_assert!(data.windows(3).any(|w| w == REPLACEMENT), "restored bytes differ");
            }
        }
    }
}
