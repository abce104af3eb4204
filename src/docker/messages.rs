//! The engine's log messages, cut from raw output the way the engine cuts them.
//!
//! Why: on the attach path dockwatch reads the container's bytes, not the engine's log, yet a
//! position must still name a point in that log so that a crash, a full disk buffer or
//! `dockwatch resume` can go on from the log with no gap and no duplicate. The engine's log
//! copier (moby `daemon/logger/copier.go`, 20.10) turns each source's bytes into messages by a
//! rule that depends on the bytes alone: a message ends at each `\n` (not kept in the message;
//! the `json-file` driver stores it back), and a line whose content reaches 16 KiB without a
//! `\n` is cut there as a *partial* message, counted again from that cut; when the source
//! closes, what is left is one last partial message. Its read sizes do not matter: the copier
//! moves the unfinished line to the front of its 16 KiB buffer after each read, so a partial
//! message is always exactly the 16 KiB that follow a line start or an earlier cut.
//!
//! [`Messages`] applies the same rule to one source's raw bytes and hands on only *complete*
//! messages (with their `\n`), holding the unfinished one (at most 16 KiB − 1 bytes) until it
//! completes. So the n-th message it counts is the n-th frame of that source in the engine's
//! log, and "the first n stdout and m stderr messages" is a position both paths share.
//! The bytes it hands on are the container's own: the log stores invalid UTF-8 (and the
//! halves of a character its 16 KiB cut splits) as U+FFFD, the attach stream does not.

use bytes::{Bytes, BytesMut};

/// The longest message the engine's copier makes for the `json-file` driver: its buffer.
pub(crate) const MESSAGE_MAX: usize = 16 * 1024;

/// One source's raw output, cut into the engine's messages (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Messages {
    /// The unfinished message: fewer than [`MESSAGE_MAX`] bytes, no `\n`.
    held: BytesMut,
}

impl Messages {
    /// Takes the next raw bytes; pushes the bytes of the messages they complete onto `out`
    /// (the held part first) and returns how many messages those are.
    pub(crate) fn feed(&mut self, data: &Bytes, out: &mut Vec<Bytes>) -> u64 {
        let (mut count, mut pos, mut len) = (0u64, 0usize, self.held.len());
        let mut complete = 0;
        loop {
            let room = MESSAGE_MAX - len;
            let window = &data[pos..data.len().min(pos + room)];
            match memchr::memchr(b'\n', window) {
                Some(i) => pos += i + 1,
                None if window.len() == room => pos += room,
                None => break,
            }
            count += 1;
            len = 0;
            complete = pos;
        }
        if complete > 0 {
            if !self.held.is_empty() {
                out.push(self.held.split().freeze());
            }
            out.push(data.slice(..complete));
        }
        self.held.extend_from_slice(&data[complete..]);
        count
    }

    /// The source ended: what is held is the engine's last (partial) message.
    pub(crate) fn finish(&mut self, out: &mut Vec<Bytes>) -> u64 {
        if self.held.is_empty() {
            return 0;
        }
        out.push(self.held.split().freeze());
        1
    }

    /// The unfinished message's bytes.
    pub(crate) fn held(&self) -> &[u8] {
        &self.held
    }
}

/// Cuts `data`, which starts where a message starts, into the engine's messages (the last
/// one unfinished when `data` ends inside it).
pub(crate) fn each(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let window = &rest[..rest.len().min(MESSAGE_MAX)];
        let n = memchr::memchr(b'\n', window).map_or(window.len(), |i| i + 1);
        let (message, r) = rest.split_at(n);
        rest = r;
        Some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The engine's copier as written in moby (20.10): reads of at most 2 KiB into a 16 KiB
    /// buffer, lines logged as found, a full buffer without a newline logged as a partial
    /// message, the rest at EOF. `reads` gives the size of each read the pipe returns.
    fn engine_copier(data: &[u8], reads: &[usize]) -> Vec<Vec<u8>> {
        const READ_SIZE: usize = 2 * 1024;
        let mut buf = vec![0u8; MESSAGE_MAX];
        let (mut n, mut src, mut r) = (0usize, 0usize, 0usize);
        let mut msgs = Vec::new();
        loop {
            let upto = (n + READ_SIZE).min(buf.len());
            let mut eof = false;
            if upto > n {
                let want = reads.get(r).copied().unwrap_or(usize::MAX).max(1);
                r += 1;
                let got = want.min(upto - n).min(data.len() - src);
                buf[n..n + got].copy_from_slice(&data[src..src + got]);
                src += got;
                n += got;
                eof = src == data.len();
            }
            if n == 0 && eof {
                return msgs;
            }
            let mut p = 0;
            while let Some(q) = memchr::memchr(b'\n', &buf[p..n]) {
                let mut m = buf[p..p + q].to_vec();
                m.push(b'\n');
                msgs.push(m);
                p += q + 1;
            }
            if eof || (p == 0 && n == buf.len()) {
                if p < n {
                    msgs.push(buf[p..n].to_vec());
                    p = 0;
                    n = 0;
                }
                if eof {
                    return msgs;
                }
            }
            if p > 0 {
                buf.copy_within(p..n, 0);
                n -= p;
            }
        }
    }

    fn cut(data: &[u8], pieces: &[usize]) -> (Vec<u8>, u64) {
        let mut m = Messages::default();
        let (mut out, mut count, mut at) = (Vec::new(), 0, 0);
        for &p in pieces.iter().chain(std::iter::once(&usize::MAX)) {
            let end = at + p.min(data.len() - at);
            count += m.feed(&Bytes::copy_from_slice(&data[at..end]), &mut out);
            at = end;
            if at == data.len() {
                break;
            }
        }
        count += m.finish(&mut out);
        (out.concat(), count)
    }

    #[test]
    fn lines_and_cuts_at_16_kib() {
        let mut m = Messages::default();
        let mut out = Vec::new();
        assert_eq!(m.feed(&Bytes::from_static(b"a\nb"), &mut out), 1);
        assert_eq!(out, vec![Bytes::from_static(b"a\n")]);
        assert_eq!(m.held(), b"b");
        out.clear();
        // A line of exactly 16 KiB: one partial message, then its newline alone.
        let long = Bytes::from(vec![b'x'; MESSAGE_MAX - 1]);
        assert_eq!(m.feed(&long, &mut out), 1);
        assert!(m.held().is_empty());
        assert_eq!(m.feed(&Bytes::from_static(b"\n"), &mut out), 1);
        assert_eq!(m.finish(&mut out), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// `each` cuts what `Messages` counts.
        #[test]
        fn each_cuts_the_same_messages(
            data in prop::collection::vec(prop_oneof![9 => Just(b'a'), 1 => Just(b'\n')], 0..60_000),
        ) {
            let engine = engine_copier(&data, &[]);
            let ours: Vec<Vec<u8>> = each(&data).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(ours, engine);
        }

        /// Whatever the bytes and however they arrive, the messages counted are the engine's
        /// (same number, same bytes), whatever sizes the engine's own reads had.
        #[test]
        fn counts_the_engine_copiers_messages(
            runs in prop::collection::vec((0usize..40_000, prop::bool::ANY, any::<u8>()), 0..8),
            pieces in prop::collection::vec(1usize..20_000, 0..20),
            reads in prop::collection::vec(1usize..3000, 0..200),
        ) {
            let mut data = Vec::new();
            for (len, newline, byte) in runs {
                data.extend(std::iter::repeat_n(if byte == b'\n' { b'y' } else { byte }, len));
                if newline { data.push(b'\n'); }
            }
            let engine = engine_copier(&data, &reads);
            let (bytes, count) = cut(&data, &pieces);
            prop_assert_eq!(count, engine.len() as u64);
            prop_assert_eq!(bytes, data);
        }

        /// Each message handed on ends where an engine message ends.
        #[test]
        fn hands_on_whole_messages_only(
            data in prop::collection::vec(prop_oneof![9 => Just(b'a'), 1 => Just(b'\n')], 0..50_000),
            pieces in prop::collection::vec(1usize..20_000, 0..10),
        ) {
            let engine = engine_copier(&data, &[]);
            let mut ends: Vec<usize> = engine.iter().scan(0, |s, m| { *s += m.len(); Some(*s) }).collect();
            ends.insert(0, 0);
            let mut m = Messages::default();
            let (mut out, mut total, mut at) = (Vec::new(), 0usize, 0usize);
            for p in pieces {
                let end = (at + p).min(data.len());
                m.feed(&Bytes::copy_from_slice(&data[at..end]), &mut out);
                total += out.drain(..).map(|b| b.len()).sum::<usize>();
                prop_assert!(ends.contains(&total));
                at = end;
            }
        }
    }
}
