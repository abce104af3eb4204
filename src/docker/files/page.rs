//! Reading a container's `json-file` log *backwards*, a page at a time: what a viewer needs
//! to open a long log at its end and scroll back to its first line without reading it all
//! (the logs endpoint cannot: its `tail` counts from the end of the file, whatever `until`
//! says, and `since`/`until` make the engine decode the whole file).
//!
//! A page is the whole records in the `limit` lines before a [`FileMark`] (a file by the
//! hash of its first line, an offset in it), oldest first, each with the mark before it and
//! after it; the mark before the oldest is where the next page (further back) ends. Pages
//! run on through the rotated files (`.1`, `.2`, …; plain files only: a gzipped one is where
//! paging stops, said as [`PageEnd::Compressed`]). A page never starts inside a line that
//! the engine cut into 16 KiB pieces: it begins after a record that ends a line.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{FileMark, first_line_hash, record, rotated_files};
use crate::docker::logs::Frame;

/// Bytes read at a time, backwards.
const STEP: usize = 256 * 1024;

/// One record of a page, with the marks before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) frame: Frame,
    pub(crate) before: FileMark,
    pub(crate) after: FileMark,
}

/// Why a page has nothing before its oldest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageEnd {
    /// There is more: the next page ends at the oldest entry's `before`.
    More,
    /// The first line the engine still has.
    Start,
    /// Older lines are in a compressed rotated file (not paged).
    Compressed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// Oldest first.
    pub(crate) entries: Vec<Entry>,
    pub(crate) end: PageEnd,
}

/// The files of the log `path`, newest first: (path, gzipped).
fn files_newest_first(path: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut files = rotated_files(dir, path)?;
    files.reverse();
    files.insert(0, (path.to_path_buf(), false));
    Ok(files)
}

fn hash_of(f: &File) -> Option<u64> {
    first_line_hash(|b, at| f.read_at(b, at))
}

/// The page of at most `limit` records before `before` (`None`: the end of the current
/// file). `Ok(None)`: no file of the log has `before`'s first line any more (rotated away).
pub(crate) fn page_before(
    path: &Path,
    before: Option<FileMark>,
    limit: usize,
) -> io::Result<Option<Page>> {
    let files = files_newest_first(path)?;
    let mut opened: Vec<(File, u64, bool)> = Vec::new();
    for (p, gz) in files {
        match File::open(&p) {
            Ok(f) => {
                let h = if gz { 0 } else { hash_of(&f).unwrap_or(0) };
                opened.push((f, h, gz));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    let (mut i, mut offset) = match before {
        None => match opened.first() {
            Some((f, _, _)) => (0, f.metadata()?.len()),
            None => {
                return Ok(Some(Page {
                    entries: Vec::new(),
                    end: PageEnd::Start,
                }));
            }
        },
        Some(m) => match opened
            .iter()
            .position(|(_, h, gz)| !gz && *h == m.first_line)
        {
            Some(i) => (i, m.offset),
            None => return Ok(None),
        },
    };
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let (f, hash, _) = &opened[i];
        let mut got = records_before(f, *hash, offset, limit.saturating_sub(entries.len()))?;
        // Fewer than asked come back only when the file was read to its start.
        let at_start = got.first().is_none_or(|e| e.before.offset == 0);
        got.append(&mut entries);
        entries = got;
        let older = opened.get(i + 1).map(|(f, _, gz)| (f, *gz));
        match (at_start, older) {
            (false, _) => return Ok(Some(page(entries, PageEnd::More))),
            (true, None) => return Ok(Some(page(entries, PageEnd::Start))),
            (true, Some((_, true))) => return Ok(Some(page(entries, PageEnd::Compressed))),
            // The next page begins at this file's start, and goes on in the older file.
            (true, Some(_)) if entries.len() >= limit => {
                return Ok(Some(page(entries, PageEnd::More)));
            }
            (true, Some((f, false))) => {
                i += 1;
                offset = f.metadata()?.len();
            }
        }
    }
}

fn page(entries: Vec<Entry>, end: PageEnd) -> Page {
    Page { entries, end }
}

/// The last `limit` whole records of `f` before byte `end` (more when the first of them
/// is a piece of a cut line: from that line's first piece), oldest first.
fn records_before(f: &File, hash: u64, end: u64, limit: usize) -> io::Result<Vec<Entry>> {
    if limit == 0 || end == 0 {
        return Ok(Vec::new());
    }
    let mut start = end;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let from = start.saturating_sub(STEP as u64);
        let mut chunk = vec![0u8; (start - from) as usize];
        f.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
        // Whole records: from the first newline of the buffer on, unless it starts the file.
        let skip = if start == 0 {
            0
        } else {
            memchr::memchr(b'\n', &buf).map_or(buf.len(), |nl| nl + 1)
        };
        if let Some(entries) = last_records(&buf[skip..], start + skip as u64, hash, limit) {
            return Ok(entries);
        }
    }
}

/// The last `limit` records of `bytes` (whole lines from file offset `base`), begun at the
/// first piece of a line the engine cut. `None`: `bytes` do not reach back far enough to
/// tell where the page begins (read more).
fn last_records(bytes: &[u8], base: u64, hash: u64, limit: usize) -> Option<Vec<Entry>> {
    let mut all: Vec<Entry> = Vec::new();
    let mut at = 0usize;
    while let Some(nl) = memchr::memchr(b'\n', &bytes[at..]) {
        let line = &bytes[at..at + nl];
        let before = base + at as u64;
        at += nl + 1;
        if let Ok(frame) = record::parse(line) {
            let mark = |offset| FileMark {
                first_line: hash,
                offset,
            };
            all.push(Entry {
                frame,
                before: mark(before),
                after: mark(base + at as u64),
            });
        }
    }
    // One record before the page is needed to know that the page begins a line.
    let mut first = all.len().checked_sub(limit + 1).map(|i| i + 1);
    if base == 0 {
        first = Some(first.unwrap_or(0));
    }
    let mut first = first?;
    while first > 0 && !ends_line(&all[first - 1].frame) {
        first -= 1;
    }
    if first == 0 && base > 0 {
        return None;
    }
    Some(all.split_off(first))
}

fn ends_line(f: &Frame) -> bool {
    f.data.last() == Some(&b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(ts: i64, stream: &str, log: &str) -> String {
        let t = crate::docker::logs::format_rfc3339_nano(ts);
        format!(
            "{{\"log\":{},\"stream\":\"{stream}\",\"time\":\"{t}\"}}\n",
            serde_json::to_string(log).unwrap()
        )
    }

    fn texts(p: &Page) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.frame.data).into_owned())
            .collect()
    }

    /// Pages of 7 walk back from the end to the first line, each line once, in order, across
    /// a rotated file; a line cut in three pieces is never split by a page boundary.
    #[test]
    fn pages_walk_back_to_the_first_line_once_each_across_rotation() {
        let dir = std::env::temp_dir().join(format!("dw-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c-json.log");
        let mut want = Vec::new();
        let mut old = File::create(dir.join("c-json.log.1")).unwrap();
        let mut cur = File::create(&path).unwrap();
        for i in 0..100i64 {
            let f = if i < 40 { &mut old } else { &mut cur };
            if i % 9 == 4 {
                // A line the engine cut into three pieces, all with one timestamp.
                for piece in ["aa".to_string(), "bb".to_string(), format!("cc{i}\n")] {
                    f.write_all(record(1_000 + i, "stdout", &piece).as_bytes())
                        .unwrap();
                    want.push(piece);
                }
            } else {
                let line = format!("line {i}\n");
                f.write_all(record(1_000 + i, "stderr", &line).as_bytes())
                    .unwrap();
                want.push(line);
            }
        }
        drop((old, cur));
        let mut got: Vec<String> = Vec::new();
        let mut before = None;
        loop {
            let p = page_before(&path, before, 7).unwrap().expect("files there");
            // A page starts at a line's first piece.
            if let Some(e) = p.entries.first()
                && p.end == PageEnd::More
            {
                let s = String::from_utf8_lossy(&e.frame.data);
                assert!(!s.starts_with("bb") && !s.starts_with("cc"), "{s}");
            }
            let mut t = texts(&p);
            t.append(&mut got);
            got = t;
            match p.end {
                PageEnd::More => before = Some(p.entries[0].before),
                PageEnd::Start => break,
                PageEnd::Compressed => panic!("no gz here"),
            }
        }
        assert_eq!(got, want);
        // A mark no file has any more: rotated away.
        let gone = FileMark {
            first_line: 42,
            offset: 10,
        };
        assert_eq!(page_before(&path, Some(gone), 7).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
