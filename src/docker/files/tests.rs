//! The files path against a directory that behaves as the engine's: records appended, the file
//! renamed and created again (rotation), `.1` gzipped, the directory removed.

use super::*;
use std::io::Write;
use std::time::Duration;

struct Engine {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    n: u64,
}

impl Engine {
    fn new(tag: &str) -> Engine {
        let dir =
            std::env::temp_dir().join(format!("dockwatch-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c-json.log");
        let file = File::create(&path).unwrap();
        Engine {
            dir,
            path,
            file,
            n: 0,
        }
    }

    /// Record n: `line n`, stdout for even n, at second n.
    fn write(&mut self, count: u64) {
        for _ in 0..count {
            let stream = if self.n.is_multiple_of(2) {
                "stdout"
            } else {
                "stderr"
            };
            writeln!(
                self.file,
                r#"{{"log":"line {}\n","stream":"{stream}","time":"2026-12-07T10:00:{:02}.{:09}Z"}}"#,
                self.n,
                self.n / 1_000_000_000,
                self.n
            )
            .unwrap();
            self.n += 1;
        }
    }

    /// As the engine rotates with max-file = `keep`: close, shift, create.
    fn rotate(&mut self, keep: u32) {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(keep - 1));
        for n in (1..keep - 1).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        std::fs::rename(&self.path, name(1)).unwrap();
        self.file = File::create(&self.path).unwrap();
        // The engine writes a megabyte between two rotations at the most: the watcher's task
        // runs meanwhile.
        std::thread::sleep(Duration::from_millis(20));
    }

    fn gzip(&self, n: u32) {
        let plain = PathBuf::from(format!("{}.{n}", self.path.display()));
        let data = std::fs::read(&plain).unwrap();
        let gz = File::create(format!("{}.gz", plain.display())).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        std::fs::remove_file(plain).unwrap();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `next` gives until it is idle: the line numbers and the last mark.
async fn read_all(files: &mut LogFiles) -> (Vec<u64>, Option<FileMark>) {
    let (mut got, mut mark) = (Vec::new(), None);
    // The watcher opens new files on its own task: give it a moment when idle.
    let mut idle = 0;
    while idle < 3 {
        match files.next().unwrap() {
            Next::Frame(f, m) => {
                let text = String::from_utf8(f.data.to_vec()).unwrap();
                let n: u64 = text
                    .trim_end()
                    .strip_prefix("line ")
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(f.source.index() as u64, n % 2, "source of line {n}");
                got.push(n);
                mark = Some(m);
                idle = 0;
            }
            Next::Idle => {
                idle += 1;
                let _ = tokio::time::timeout(Duration::from_millis(50), files.changed()).await;
            }
        }
    }
    (got, mark)
}

fn position(mark: Option<FileMark>) -> Position {
    Position {
        file: mark,
        ..Position::START
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_rotation_and_resumes_at_the_mark_also_in_a_gzipped_file() {
    let mut e = Engine::new("rotate");
    let w = Watcher::start().unwrap();
    e.write(10);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    files.start_after(&Position::START).unwrap();
    let (got, _) = read_all(&mut files).await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    // Three rotations with max-file=2 before the reader looks again: the watcher holds them.
    for _ in 0..3 {
        e.write(5);
        e.rotate(2);
    }
    e.write(5);
    let (got, mark) = read_all(&mut files).await;
    assert_eq!(
        got,
        (10..30).collect::<Vec<_>>(),
        "nothing rotated away unread"
    );
    assert_eq!(files.take_all_lost(), vec![]);
    drop(files);

    // Resume after line 29 in the current file, after more was written.
    e.write(3);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    files.start_after(&position(mark)).unwrap();
    let (got, mark) = read_all(&mut files).await;
    assert_eq!(got, vec![30, 31, 32]);
    drop(files);

    // The file of the mark rotated and was compressed meanwhile: read from the .gz.
    e.write(2);
    e.rotate(3);
    e.gzip(1);
    e.write(1);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    files.start_after(&position(mark)).unwrap();
    let (got, _) = read_all(&mut files).await;
    assert_eq!(got, vec![33, 34, 35]);
    assert_eq!(files.take_all_lost(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_whose_file_rotated_away_is_a_reported_gap() {
    let mut e = Engine::new("lost");
    let w = Watcher::start().unwrap();
    e.write(4);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    files.start_after(&Position::START).unwrap();
    let (_, mark) = read_all(&mut files).await;
    drop(files);
    // Stopped; meanwhile two rotations with max-file=2 drop the file of the mark.
    e.write(3);
    e.rotate(2);
    e.write(3);
    e.rotate(2);
    e.write(1);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    let mut from = position(mark);
    from.cursor = Some(Cursor {
        ts_ns: 3,
        source: Source::Stderr,
        nth: 1,
    });
    files.start_after(&from).unwrap();
    let (got, _) = read_all(&mut files).await;
    // Lines 4..=6 were in the dropped file.
    assert_eq!(got, vec![7, 8, 9, 10]);
    let lost = files.take_all_lost();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let first = parse_ts(7);
    assert_eq!(
        (lost[0].after_ns, lost[0].before_ns),
        (Some(3), Some(first))
    );
}

fn parse_ts(n: u64) -> i64 {
    crate::docker::logs::parse_timestamp(format!("2026-12-07T10:00:00.{n:09}Z").as_bytes()).unwrap()
}

use crate::docker::Source;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_records_are_counted_and_a_cursor_is_continued_by_time() {
    let mut e = Engine::new("torn");
    let w = Watcher::start().unwrap();
    e.write(2);
    e.file.write_all(b"{\"log\":\"torn by a cra").unwrap();
    e.file.write_all(b"\n").unwrap();
    e.write(4);
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    // A position from the logs endpoint: after line 2 (stdout, at its time).
    let from = Position {
        cursor: Some(Cursor {
            ts_ns: parse_ts(2),
            source: Source::Stdout,
            nth: 1,
        }),
        ..Position::START
    };
    files.start_after(&from).unwrap();
    let (got, _) = read_all(&mut files).await;
    assert_eq!(got, vec![3, 4, 5]);
    assert_eq!(files.bad_records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_container_is_read_to_its_end_through_the_held_file() {
    let mut e = Engine::new("removed");
    let w = Watcher::start().unwrap();
    let mut files = LogFiles::open(&w, &e.path).unwrap();
    files.start_after(&Position::START).unwrap();
    e.write(20);
    std::fs::remove_dir_all(&e.dir).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !files.closes_and_gone().1 {
            files.changed().await;
        }
    })
    .await
    .unwrap();
    let (got, _) = read_all(&mut files).await;
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn rotated_files_oldest_first_plain_before_gz() {
    let e = Engine::new("list");
    for name in [
        "c-json.log.1",
        "c-json.log.2.gz",
        "c-json.log.1.gz",
        "c-json.log.x",
        "other.1",
    ] {
        File::create(e.dir.join(name)).unwrap();
    }
    let got: Vec<String> = rotated_files(&e.dir, &e.path)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, vec!["c-json.log.2.gz", "c-json.log.1"]);
}
