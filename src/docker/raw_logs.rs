//! The container's log stream read straight from the engine's Unix socket.
//!
//! Why: the engine flushes every log message as its own HTTP chunk, and through the general
//! Docker client each chunk crosses a channel and a task wake-up; measured with perf, that
//! plumbing was most of dockwatch's CPU in a flood. Here one buffer is filled from the socket
//! and chunks and frames are cut out of it in place.
//!
//! Protocol: `GET /vX.Y/containers/ID/logs?...` over HTTP/1.1; the answer is chunked (or runs
//! until the connection closes) and carries either the multiplexed stream (8-byte headers:
//! type 1 stdout, 2 stderr, 3 an engine error sent after the 200) or, for TTY containers, the
//! raw stream, which is cut at newlines. Any other status is an error with the engine's
//! message. Used for `unix://` hosts only; others go through bollard.
//!
//! [`RawLogs::attach`] reads the attach stream the same way (`POST .../attach` upgraded to a
//! raw connection: the multiplexed stream, or the raw TTY stream handed on as it arrives).

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::DockerError;
use crate::docker::Source;

/// A log stream being read.
pub(crate) struct RawLogs {
    sock: UnixStream,
    /// Bytes from the socket not yet de-chunked.
    raw: BytesMut,
    /// The response body (de-chunked).
    body: BytesMut,
    /// The body is chunked (else it runs until the connection closes).
    chunked: bool,
    /// Bytes left in the current chunk.
    chunk_left: usize,
    /// A chunk's trailing CRLF is still to be skipped.
    chunk_crlf: bool,
    /// The body is multiplexed (else raw TTY output); `None` until the first body byte tells
    /// (engine 20.10 sends no Content-Type: a multiplexed stream starts with a type byte 0-3,
    /// raw output with timestamps on starts with a digit).
    multiplexed: Option<bool>,
    /// The body ended.
    eof: bool,
    /// Raw (TTY) output is handed on as it arrives instead of cut at newlines.
    raw_as_is: bool,
}

fn err(reason: impl Into<String>) -> DockerError {
    DockerError::Api {
        context: "read container logs".into(),
        reason: reason.into(),
    }
}

impl RawLogs {
    /// Sends the request and reads the answer's head.
    pub(crate) async fn open(socket: &str, path_and_query: &str) -> Result<Self, DockerError> {
        let req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockwatch\r\n\r\n"
        );
        Self::request(socket, &req, false).await
    }

    /// Attaches to a container's output (`path` is `/vX.Y/containers/ID/attach?...`): the
    /// multiplexed stream, or for a TTY container the raw bytes as they arrive.
    pub(crate) async fn attach(socket: &str, path: &str, tty: bool) -> Result<Self, DockerError> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockwatch\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        );
        let mut s = Self::request(socket, &req, true).await?;
        s.multiplexed = Some(!tty);
        s.raw_as_is = true;
        Ok(s)
    }

    async fn request(socket: &str, req: &str, upgrade: bool) -> Result<Self, DockerError> {
        let mut sock = UnixStream::connect(socket)
            .await
            .map_err(|e| err(format!("cannot connect to {socket}: {e}")))?;
        sock.write_all(req.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut raw = BytesMut::with_capacity(64 * 1024);
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&raw, b"\r\n\r\n") {
                break i;
            }
            if raw.len() > 64 * 1024 {
                return Err(err("the engine's answer has no end of headers"));
            }
            if sock
                .read_buf(&mut raw)
                .await
                .map_err(|e| err(e.to_string()))?
                == 0
            {
                return Err(err("the engine closed the connection before answering"));
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        raw.advance(head_end + 4);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("the engine's answer has no status"))?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim_start_matches(':').trim().to_string())
            })
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let multiplexed = header("content-type").and_then(|v| {
            if v.contains("multiplexed") {
                Some(true)
            } else if v.contains("raw-stream") {
                Some(false)
            } else {
                None
            }
        });
        let mut logs = Self {
            sock,
            raw,
            body: BytesMut::with_capacity(64 * 1024),
            chunked,
            chunk_left: 0,
            chunk_crlf: false,
            multiplexed,
            eof: false,
            raw_as_is: false,
        };
        if upgrade && status == 101 {
            logs.chunked = false;
        } else if status != 200 {
            // The engine's error: {"message": "..."}, read to its Content-Length: the engine
            // keeps the connection open after it (a 404 of a removed container), so reading
            // to the end of the stream would wait for ever.
            let length = header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(64 * 1024)
                .min(64 * 1024);
            let read_body = async {
                while !logs.eof && logs.body.len() + logs.raw.len() < length {
                    logs.fill().await?;
                }
                Ok::<_, DockerError>(())
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_body).await;
            if !logs.chunked {
                let raw = std::mem::take(&mut logs.raw);
                logs.body.extend_from_slice(&raw);
            }
            let msg = serde_json::from_slice::<serde_json::Value>(&logs.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&logs.body).trim().to_string());
            return Err(DockerError::Answered {
                context: "read container logs".into(),
                status,
                message: msg,
            });
        }
        Ok(logs)
    }

    /// The next message of the container: its source and bytes (timestamp prefix included).
    pub(crate) async fn next(&mut self) -> Option<Result<(Source, Bytes), DockerError>> {
        loop {
            match self.cut() {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.eof {
                if self.multiplexed == Some(false) && !self.body.is_empty() {
                    // A TTY stream's last line without a newline.
                    return Some(Ok((Source::Stdout, self.body.split().freeze())));
                }
                return None;
            }
            if let Err(e) = self.fill().await {
                return Some(Err(e));
            }
        }
    }

    /// A whole message from the body, if one is there.
    fn cut(&mut self) -> Result<Option<(Source, Bytes)>, DockerError> {
        let multiplexed = match (self.multiplexed, self.body.first()) {
            (Some(m), _) => m,
            (None, None) => return Ok(None),
            (None, Some(&b)) => *self.multiplexed.insert(b <= 3),
        };
        if !multiplexed {
            if self.raw_as_is {
                return Ok(
                    (!self.body.is_empty()).then(|| (Source::Stdout, self.body.split().freeze()))
                );
            }
            return Ok(memchr::memchr(b'\n', &self.body)
                .map(|i| (Source::Stdout, self.body.split_to(i + 1).freeze())));
        }
        // Frames of type 0 (stdin) are skipped; the loop goes on to the next frame.
        loop {
            if self.body.len() < 8 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([self.body[4], self.body[5], self.body[6], self.body[7]])
                as usize;
            if self.body.len() < 8 + len {
                return Ok(None);
            }
            let kind = self.body[0];
            self.body.advance(8);
            let payload = self.body.split_to(len).freeze();
            return match kind {
                0 => continue,
                1 => Ok(Some((Source::Stdout, payload))),
                2 => Ok(Some((Source::Stderr, payload))),
                3 => Err(err(format!(
                    "the engine reported: {}",
                    String::from_utf8_lossy(&payload).trim()
                ))),
                other => Err(err(format!(
                    "unknown stream type {other} in the log stream"
                ))),
            };
        }
    }

    /// Moves more of the body in: from bytes already read, else from the socket.
    async fn fill(&mut self) -> Result<(), DockerError> {
        if self.chunked && self.dechunk()? {
            return Ok(());
        }
        // Large reads: the engine writes one small chunk per log message.
        self.raw.reserve(256 * 1024);
        let n = self
            .sock
            .read_buf(&mut self.raw)
            .await
            .map_err(|e| err(e.to_string()))?;
        if n == 0 {
            if self.chunked {
                return Err(err(
                    "the engine closed the log stream in the middle of a chunk",
                ));
            }
            self.eof = true;
            return Ok(());
        }
        if self.chunked {
            self.dechunk()?;
        } else {
            let all = self.raw.split();
            self.body.unsplit(all);
        }
        Ok(())
    }

    /// De-chunks what `raw` holds; false when it needs more bytes to make progress.
    fn dechunk(&mut self) -> Result<bool, DockerError> {
        let mut progressed = false;
        loop {
            if self.chunk_crlf {
                if self.raw.len() < 2 {
                    return Ok(progressed);
                }
                self.raw.advance(2);
                self.chunk_crlf = false;
                progressed = true;
            }
            if self.chunk_left == 0 {
                let Some(i) = memchr::memmem::find(&self.raw, b"\r\n") else {
                    return Ok(progressed);
                };
                let line =
                    std::str::from_utf8(&self.raw[..i]).map_err(|_| err("bad chunk size"))?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| err(format!("bad chunk size {line:?}")))?;
                self.raw.advance(i + 2);
                progressed = true;
                if size == 0 {
                    self.eof = true;
                    return Ok(true);
                }
                self.chunk_left = size;
            }
            if self.raw.is_empty() {
                return Ok(progressed);
            }
            let n = self.chunk_left.min(self.raw.len());
            let part = self.raw.split_to(n);
            self.body.unsplit(part);
            self.chunk_left -= n;
            progressed = true;
            if self.chunk_left == 0 {
                self.chunk_crlf = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn reader(sock: UnixStream) -> RawLogs {
        RawLogs {
            sock,
            raw: BytesMut::new(),
            body: BytesMut::new(),
            chunked: false,
            chunk_left: 0,
            chunk_crlf: false,
            multiplexed: None,
            eof: false,
            raw_as_is: false,
        }
    }

    /// A stdin frame between two output frames is skipped without waiting for more bytes
    /// from the engine (the connection stays open here).
    #[tokio::test]
    async fn stdin_frames_are_skipped_without_waiting() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut bytes = frame(1, b"one\n");
        bytes.extend(frame(0, b"typed"));
        bytes.extend(frame(2, b"two\n"));
        b.write_all(&bytes).await.unwrap();
        let mut logs = reader(a);
        let wait = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(wait, logs.next()).await.unwrap();
        assert_eq!(
            first.unwrap().unwrap(),
            (Source::Stdout, Bytes::from_static(b"one\n"))
        );
        let second = tokio::time::timeout(wait, logs.next()).await;
        let second = second.expect("waited for bytes the engine never sent");
        assert_eq!(
            second.unwrap().unwrap(),
            (Source::Stderr, Bytes::from_static(b"two\n"))
        );
        drop(b);
        assert!(logs.next().await.is_none());
    }

    /// The engine keeps the connection open after an error answer: its body is read to its
    /// Content-Length, not to the end of the stream (which never comes).
    #[tokio::test]
    async fn an_error_answer_on_a_connection_kept_open_returns_at_once() {
        let dir = std::env::temp_dir().join(format!("dockwatch-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("engine.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let body = br#"{"message":"No such container: 0123456789abcdef"}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body).await.unwrap();
            // Held open, as the engine does.
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            drop(s);
        });
        let wait = std::time::Duration::from_secs(2);
        let r = tokio::time::timeout(wait, RawLogs::open(path.to_str().unwrap(), "/x"))
            .await
            .expect("waited for the end of a connection the engine keeps open");
        match r {
            Err(DockerError::Answered {
                status, message, ..
            }) => {
                assert_eq!(status, 404);
                assert_eq!(message, "No such container: 0123456789abcdef");
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a 404 is no log stream"),
        }
        server.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_engine_error_frame_is_an_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&frame(3, b"log file is gone\n")).await.unwrap();
        drop(b);
        let e = reader(a).next().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("log file is gone"), "{e}");
    }
}
