//! Framing: the container's raw output bytes, as Docker delivers them, cut into CloudWatch
//! events.
//!
//! The rules (each one tested below, and the whole checked by a property test that any
//! chunking of a byte stream gives the same events as the whole stream):
//!
//! - **Line ends.** `\n` ends an event, and so does `\r`: `\r\n` therefore counts as one end,
//!   and a progress bar that redraws itself with lone `\r`s (tqdm, curl, pip) becomes one event
//!   per redraw instead of one giant event that grows for the whole run.
//! - **Empty lines** are skipped and counted ([`FramingStats::empty_lines`]): CloudWatch rejects
//!   empty messages, and a placeholder would make what arrives differ from what was written.
//! - **Invalid UTF-8** never breaks a run: each maximal invalid sequence becomes one U+FFFD,
//!   exactly as [`String::from_utf8_lossy`] does for the whole line, and is counted. A
//!   multi-byte character cut across Docker frames is reassembled first. In escape mode
//!   ([`Framer::escaping`], `--invalid-utf8 escape`) each invalid byte becomes `\xNN` (two
//!   lowercase hex digits) and each `\` becomes `\\`, so the original bytes can be restored
//!   exactly: read `\\` as `\` and `\xNN` as the byte NN.
//! - **Long lines** (including Docker's own 16 KiB partial messages, which simply arrive
//!   without a `\n`) are joined, and a line longer than the largest message is split greedily
//!   at UTF-8 character boundaries into pieces of at most `max_message_bytes`, in order.
//! - **Output that ends without a newline** is emitted by [`Framer::finish`].
//! - stdout and stderr keep separate partial lines; events come out in the order their lines
//!   ended. Each event carries the Docker timestamp of the frame its first byte arrived in.

use memchr::memchr2;

pub(crate) use crate::docker::Source;

/// One CloudWatch event in the making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Milliseconds since the Unix epoch: when Docker received the line's first byte.
    pub(crate) ts_ms: i64,
    /// The message: valid UTF-8, non-empty, at most `max_message_bytes` long.
    pub(crate) message: String,
    /// stdout or stderr.
    pub(crate) source: Source,
}

/// Counters of what framing had to do to the output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FramingStats {
    /// Empty lines skipped.
    pub(crate) empty_lines: u64,
    /// Invalid UTF-8 sequences replaced by U+FFFD.
    pub(crate) invalid_sequences: u64,
    /// Invalid bytes written as `\xNN` (escape mode).
    pub(crate) escaped_bytes: u64,
    /// Extra events made by splitting lines longer than the largest message.
    pub(crate) split_pieces: u64,
}

/// The partial line of one source.
#[derive(Debug, Default)]
struct LineBuilder {
    /// The decoded text of the current piece.
    pending: String,
    /// Timestamp of the frame the current piece's first byte came in.
    piece_ts: Option<i64>,
    /// An incomplete UTF-8 sequence at the end of the last chunk (at most 3 bytes).
    carry: [u8; 4],
    carry_len: usize,
    /// The last byte seen was a `\r`: `Some(true)` when it ended a non-empty line (so a `\n`
    /// right after it ends nothing new), `Some(false)` when the line was empty.
    after_cr: Option<bool>,
    /// The current line was already split at least once.
    split: bool,
    /// Escape mode: invalid bytes as `\xNN`, `\` as `\\`.
    escape: bool,
}

/// Cuts byte streams into events. See the module doc for the rules.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Largest message in bytes (the event limit less CloudWatch's 26 bytes).
    max_message_bytes: usize,
    stdout: LineBuilder,
    stderr: LineBuilder,
    /// What framing did so far.
    pub(crate) stats: FramingStats,
}

impl Framer {
    /// `max_message_bytes` must be at least 4 (one character of any width).
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        assert!(
            max_message_bytes >= 4,
            "max_message_bytes must hold any character"
        );
        Self {
            max_message_bytes,
            stdout: LineBuilder::default(),
            stderr: LineBuilder::default(),
            stats: FramingStats::default(),
        }
    }

    /// Escape mode (see the module doc) instead of replacement.
    pub(crate) fn escaping(mut self, escape: bool) -> Self {
        self.stdout.escape = escape;
        self.stderr.escape = escape;
        self
    }

    /// Feeds one chunk of a source's output, received by Docker at `ts_ms`; completed events
    /// are appended to `out`.
    pub(crate) fn push(
        &mut self,
        source: Source,
        ts_ms: i64,
        mut data: &[u8],
        out: &mut Vec<Event>,
    ) {
        let max = self.max_message_bytes;
        let (lb, stats) = self.builder(source);
        while !data.is_empty() {
            match memchr2(b'\n', b'\r', data) {
                Some(i) => {
                    lb.append(&data[..i], ts_ms, source, max, stats, out);
                    lb.end_line(data[i], source, max, stats, out);
                    data = &data[i + 1..];
                }
                None => {
                    lb.append(data, ts_ms, source, max, stats, out);
                    break;
                }
            }
        }
    }

    /// True when no partial line is held: every byte fed so far is in an emitted event (or was
    /// a line end). A position in the log where this holds can be resumed from exactly.
    pub(crate) fn is_clean(&self) -> bool {
        [&self.stdout, &self.stderr]
            .iter()
            .all(|b| b.pending.is_empty() && b.carry_len == 0)
    }

    /// Ends both sources' partial lines (output that ended without a newline).
    pub(crate) fn finish(&mut self, out: &mut Vec<Event>) {
        let max = self.max_message_bytes;
        for source in [Source::Stdout, Source::Stderr] {
            let (lb, stats) = self.builder(source);
            lb.flush_carry(source, max, stats, out);
            if !lb.pending.is_empty() {
                lb.emit(source, stats, out);
            }
            lb.split = false;
        }
    }

    fn builder(&mut self, source: Source) -> (&mut LineBuilder, &mut FramingStats) {
        match source {
            Source::Stdout => (&mut self.stdout, &mut self.stats),
            Source::Stderr => (&mut self.stderr, &mut self.stats),
        }
    }
}

impl LineBuilder {
    fn append(
        &mut self,
        mut data: &[u8],
        ts: i64,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        if data.is_empty() {
            return;
        }
        self.after_cr = None;
        if self.piece_ts.is_none() {
            self.piece_ts = Some(ts);
        }
        // Finish a character that was cut at the end of the previous chunk.
        if self.carry_len > 0 {
            let mut buf = [0u8; 8];
            let cl = self.carry_len;
            buf[..cl].copy_from_slice(&self.carry[..cl]);
            let take = data.len().min(4);
            buf[cl..cl + take].copy_from_slice(&data[..take]);
            let b = &buf[..cl + take];
            let mut i = 0;
            while i < cl {
                match std::str::from_utf8(&b[i..]) {
                    Ok(s) => {
                        let c = s.chars().next().expect("non-empty");
                        self.push_text(c.encode_utf8(&mut [0; 4]), ts, source, max, stats, out);
                        i += c.len_utf8();
                    }
                    Err(e) if e.valid_up_to() > 0 => {
                        let s = std::str::from_utf8(&b[i..i + e.valid_up_to()]).expect("valid");
                        let c = s.chars().next().expect("non-empty");
                        self.push_text(c.encode_utf8(&mut [0; 4]), ts, source, max, stats, out);
                        i += c.len_utf8();
                    }
                    Err(e) => match e.error_len() {
                        Some(n) => {
                            let bad = [
                                b[i],
                                *b.get(i + 1).unwrap_or(&0),
                                *b.get(i + 2).unwrap_or(&0),
                            ];
                            self.push_invalid(&bad[..n], ts, source, max, stats, out);
                            i += n;
                        }
                        None => {
                            // Still incomplete: everything we have is the new carry.
                            let rest = &b[i..];
                            self.carry[..rest.len()].copy_from_slice(rest);
                            self.carry_len = rest.len();
                            return;
                        }
                    },
                }
            }
            self.carry_len = 0;
            data = &data[i - cl..];
        }
        loop {
            match std::str::from_utf8(data) {
                Ok(s) => {
                    self.push_text(s, ts, source, max, stats, out);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = data.split_at(e.valid_up_to());
                    let s = std::str::from_utf8(valid).expect("valid prefix");
                    self.push_text(s, ts, source, max, stats, out);
                    match e.error_len() {
                        Some(n) => {
                            self.push_invalid(&rest[..n], ts, source, max, stats, out);
                            data = &rest[n..];
                        }
                        None => {
                            self.carry[..rest.len()].copy_from_slice(rest);
                            self.carry_len = rest.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// An invalid sequence: one U+FFFD, or `\xNN` per byte in escape mode.
    fn push_invalid(
        &mut self,
        bytes: &[u8],
        ts: i64,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        if !self.escape {
            stats.invalid_sequences += 1;
            self.push_str("\u{FFFD}", ts, source, max, stats, out);
            return;
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            stats.escaped_bytes += 1;
            let esc = [
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ];
            let esc = std::str::from_utf8(&esc).expect("ASCII");
            self.push_str(esc, ts, source, max, stats, out);
        }
    }

    /// Valid text: as it is, or with `\` doubled in escape mode.
    fn push_text(
        &mut self,
        s: &str,
        ts: i64,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        if !self.escape || !s.contains('\\') {
            self.push_str(s, ts, source, max, stats, out);
            return;
        }
        let mut parts = s.split('\\');
        if let Some(first) = parts.next() {
            self.push_str(first, ts, source, max, stats, out);
        }
        for part in parts {
            self.push_str("\\\\", ts, source, max, stats, out);
            self.push_str(part, ts, source, max, stats, out);
        }
    }

    /// Appends text, emitting full pieces greedily at character boundaries.
    fn push_str(
        &mut self,
        mut s: &str,
        ts: i64,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        while !s.is_empty() {
            if self.piece_ts.is_none() {
                self.piece_ts = Some(ts);
            }
            let room = max - self.pending.len();
            if s.len() <= room {
                self.pending.push_str(s);
                return;
            }
            let cut = s.floor_char_boundary(room);
            self.pending.push_str(&s[..cut]);
            s = &s[cut..];
            self.emit(source, stats, out);
            self.split = true;
        }
    }

    /// An incomplete sequence before a line end (or the end of output) is one invalid
    /// sequence, as `from_utf8_lossy` counts it.
    fn flush_carry(
        &mut self,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        if self.carry_len > 0 {
            let (carry, n) = (self.carry, self.carry_len);
            self.carry_len = 0;
            let ts = self.piece_ts.unwrap_or_default();
            self.push_invalid(&carry[..n], ts, source, max, stats, out);
        }
    }

    fn end_line(
        &mut self,
        term: u8,
        source: Source,
        max: usize,
        stats: &mut FramingStats,
        out: &mut Vec<Event>,
    ) {
        self.flush_carry(source, max, stats, out);
        let ended_text = !self.pending.is_empty() || self.split;
        if !self.pending.is_empty() {
            self.emit(source, stats, out);
        }
        // An empty line is a `\n` (or `\r\n`) with nothing before it; a lone `\r` on an empty
        // line is a redraw (a progress bar's first frame), not a line.
        if term == b'\n' && !ended_text && self.after_cr != Some(true) {
            stats.empty_lines += 1;
        }
        self.split = false;
        self.after_cr = (term == b'\r').then_some(ended_text);
    }

    fn emit(&mut self, source: Source, stats: &mut FramingStats, out: &mut Vec<Event>) {
        if self.split {
            stats.split_pieces += 1;
        }
        out.push(Event {
            ts_ms: self.piece_ts.take().unwrap_or_default(),
            message: std::mem::take(&mut self.pending),
            source,
        });
    }
}

/// The framing rules written the slow and obvious way, on a whole stream of one source: the
/// messages [`Framer`] must produce for `whole` (tests compare against it).
pub fn reference(max_message_bytes: usize, whole: &[u8]) -> Vec<String> {
    reference_with(max_message_bytes, whole, |seg| {
        String::from_utf8_lossy(seg).into_owned()
    })
}

/// [`reference`] in escape mode.
pub fn reference_escaped(max_message_bytes: usize, whole: &[u8]) -> Vec<String> {
    reference_with(max_message_bytes, whole, escape_line)
}

/// A line in escape mode, the slow and obvious way.
pub fn escape_line(seg: &[u8]) -> String {
    let mut line = String::new();
    for chunk in seg.utf8_chunks() {
        line.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            line.push_str(&format!("\\x{b:02x}"));
        }
    }
    line
}

/// The bytes an escaped line stands for (the inverse of [`escape_line`]; a test helper and
/// the documentation of the format).
pub fn unescape_line(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
            match u8::from_str_radix(hex, 16) {
                Ok(v) => {
                    out.push(v);
                    i += 4;
                }
                Err(_) => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn reference_with(
    max_message_bytes: usize,
    whole: &[u8],
    decode: impl Fn(&[u8]) -> String,
) -> Vec<String> {
    let mut events = Vec::new();
    for seg in whole.split(|b| *b == b'\n' || *b == b'\r') {
        let line = decode(seg);
        let mut rest: &str = &line;
        while !rest.is_empty() {
            let cut = if rest.len() <= max_message_bytes {
                rest.len()
            } else {
                rest.floor_char_boundary(max_message_bytes)
            };
            events.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_all(max: usize, chunks: &[&[u8]]) -> (Vec<String>, FramingStats) {
        frame_all_mode(max, chunks, false)
    }

    fn frame_all_mode(max: usize, chunks: &[&[u8]], escape: bool) -> (Vec<String>, FramingStats) {
        let mut f = Framer::new(max).escaping(escape);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            f.push(Source::Stdout, i as i64, c, &mut out);
        }
        f.finish(&mut out);
        (out.into_iter().map(|e| e.message).collect(), f.stats)
    }

    #[test]
    fn lines_and_line_ends() {
        let (ev, st) = frame_all(100, &[b"a\nb\r\nc\rd\n\n\ne"]);
        assert_eq!(ev, ["a", "b", "c", "d", "e"]);
        assert_eq!(st.empty_lines, 2);
    }

    #[test]
    fn clean_only_between_lines() {
        let mut f = Framer::new(100);
        let mut out = Vec::new();
        assert!(f.is_clean());
        f.push(Source::Stdout, 0, b"abc", &mut out);
        assert!(!f.is_clean());
        f.push(Source::Stdout, 0, b"\n\xe2", &mut out);
        assert!(!f.is_clean());
        f.push(Source::Stdout, 0, b"\x82\xac\n", &mut out);
        assert!(f.is_clean());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn empty_line_counting() {
        // Two empty \n lines, one empty \r\n line; the progress bar's leading \r is no line.
        let (ev, st) = frame_all(100, &[b"a\n\n\nb\r\nc\r\n\r\n\r 0%\r50%\n"]);
        assert_eq!(ev, ["a", "b", "c", " 0%", "50%"]);
        assert_eq!(st.empty_lines, 3);
    }

    #[test]
    fn crlf_across_chunks_is_one_end() {
        let (ev, st) = frame_all(100, &[b"a\r", b"\nb\n"]);
        assert_eq!(ev, ["a", "b"]);
        assert_eq!(st.empty_lines, 0);
    }

    #[test]
    fn progress_bar_redraws_become_events() {
        let (ev, _) = frame_all(100, &[b"\r 10%|#  |\r 50%|## |\r100%|###|\n"]);
        assert_eq!(ev, [" 10%|#  |", " 50%|## |", "100%|###|"]);
    }

    #[test]
    fn partial_docker_messages_are_joined_and_keep_first_timestamp() {
        let mut f = Framer::new(100);
        let mut out = Vec::new();
        f.push(Source::Stdout, 10, b"hel", &mut out);
        f.push(Source::Stdout, 20, b"lo\nworld\n", &mut out);
        assert_eq!(out[0].message, "hello");
        assert_eq!(out[0].ts_ms, 10);
        assert_eq!(out[1].message, "world");
        assert_eq!(out[1].ts_ms, 20);
    }

    #[test]
    fn multibyte_character_cut_across_chunks() {
        let s = "é€😀".as_bytes();
        for cut in 0..=s.len() {
            let (ev, st) = frame_all(100, &[&s[..cut], &s[cut..]]);
            assert_eq!(ev, ["é€😀"], "cut at {cut}");
            assert_eq!(st.invalid_sequences, 0);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let (ev, st) = frame_all(100, &[b"a\xffb\xe2\x82\n\xf0\x9f"]);
        assert_eq!(ev, ["a\u{FFFD}b\u{FFFD}", "\u{FFFD}"]);
        assert_eq!(st.invalid_sequences, 3);
    }

    #[test]
    fn escape_mode_keeps_every_byte() {
        let raw: &[u8] = b"a\xffb\\n\xe2\x82\xac\xe2\x82\nok \\x41\n\xf0\x9f";
        let (ev, st) = frame_all_mode(100, &[raw], true);
        assert_eq!(ev, ["a\\xffb\\\\n€\\xe2\\x82", "ok \\\\x41", "\\xf0\\x9f"]);
        assert_eq!(st.escaped_bytes, 5);
        assert_eq!(st.invalid_sequences, 0);
        // Unescaping gives the original lines back.
        let back: Vec<Vec<u8>> = ev.iter().map(|e| unescape_line(e)).collect();
        assert_eq!(
            back,
            [
                &b"a\xffb\\n\xe2\x82\xac\xe2\x82"[..],
                b"ok \\x41",
                b"\xf0\x9f"
            ]
        );
        // Valid lines without a backslash are unchanged.
        let (ev, _) = frame_all_mode(100, &[b"plain \xc3\xa9\n"], true);
        assert_eq!(ev, ["plain é"]);
    }

    #[test]
    fn escape_mode_carry_across_chunks() {
        // An invalid sequence cut across chunks is escaped byte by byte, a valid one kept.
        let (ev, st) = frame_all_mode(100, &[b"x\xe2", b"\x82y\xe2\x82", b"\xac\n"], true);
        assert_eq!(ev, ["x\\xe2\\x82y€"]);
        assert_eq!(st.escaped_bytes, 2);
    }

    #[test]
    fn nul_bytes_and_ansi_codes_pass_through() {
        let (ev, _) = frame_all(100, &[b"a\0b \x1b[31mred\x1b[0m\n"]);
        assert_eq!(ev, ["a\0b \x1b[31mred\x1b[0m"]);
    }

    #[test]
    fn long_line_is_split_at_char_boundaries() {
        let line = "ab€".repeat(5); // 25 bytes
        let (ev, st) = frame_all(7, &[line.as_bytes(), b"\n"]);
        assert!(ev.iter().all(|e| e.len() <= 7 && !e.is_empty()));
        assert_eq!(ev.concat(), line);
        assert_eq!(st.split_pieces as usize, ev.len() - 1);
        assert_eq!(st.empty_lines, 0);
    }

    #[test]
    fn output_without_trailing_newline_is_flushed() {
        let (ev, _) = frame_all(100, &[b"one\ntwo"]);
        assert_eq!(ev, ["one", "two"]);
    }

    #[test]
    fn sources_keep_their_own_partial_lines() {
        let mut f = Framer::new(100);
        let mut out = Vec::new();
        f.push(Source::Stdout, 1, b"out-", &mut out);
        f.push(Source::Stderr, 2, b"err\n", &mut out);
        f.push(Source::Stdout, 3, b"line\n", &mut out);
        let got: Vec<_> = out.iter().map(|e| (e.source, e.message.as_str())).collect();
        assert_eq!(got, [(Source::Stderr, "err"), (Source::Stdout, "out-line")]);
    }

    fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
        // Biased towards the interesting bytes: line ends, UTF-8 lead/continuation bytes.
        let byte = prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
            2 => prop::sample::select(vec![0xC3u8, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80]),
            3 => prop::sample::select(b"abcxyz".to_vec()),
        ];
        prop::collection::vec(byte, 0..400)
    }

    /// `data` cut at the given points.
    fn cut<'a>(data: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for p in points {
            chunks.push(&data[prev..p]);
            prev = p;
        }
        chunks.push(&data[prev..]);
        chunks
    }

    /// Frames `data` cut at `cuts` and whole, and checks both give the same events and
    /// counters, the reference events of the mode, and no empty or oversized message.
    fn framed_any_chunking(
        data: &[u8],
        cuts: &[prop::sample::Index],
        max: usize,
        escape: bool,
    ) -> Result<Vec<String>, TestCaseError> {
        let (chunked, st1) = frame_all_mode(max, &cut(data, cuts), escape);
        let (whole, st2) = frame_all_mode(max, &[data], escape);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(st1, st2);
        let want = if escape {
            reference_escaped(max, data)
        } else {
            reference(max, data)
        };
        prop_assert_eq!(&whole, &want);
        for e in &whole {
            prop_assert!(!e.is_empty() && e.len() <= max);
        }
        Ok(whole)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_chunking_gives_the_reference_events(
            data in bytes_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            max in 4usize..40,
        ) {
            framed_any_chunking(&data, &cuts, max, false)?;
        }

        #[test]
        fn escape_mode_any_chunking_is_lossless(
            data in bytes_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            max in 4usize..40,
        ) {
            let whole = framed_any_chunking(&data, &cuts, max, true)?;
            // Every line comes back byte for byte (split pieces are concatenated).
            let lines: Vec<Vec<u8>> = data
                .split(|b| *b == b'\n' || *b == b'\r')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            let joined: Vec<u8> = whole.concat().into_bytes();
            prop_assert_eq!(unescape_line(&String::from_utf8(joined).unwrap()), lines.concat());
        }
    }
}
