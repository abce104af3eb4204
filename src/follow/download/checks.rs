//! Running the ledger's checks for one stream: read a time range again, compare bucket
//! digests, resolve the buckets that differ from the file, append what is missing.
//! The design (why, schedule, cost) is in [`super::ledger`].

use super::files;
use super::ledger::{COARSE_MS, Check, FINE_MS, Fingerprints, Pass, align, fingerprint};
use super::{Daemon, Key, log};
use crate::follow::FollowError;
use crate::follow::source::Event;
use crate::util::time::{format_rfc3339_ms, now_ms};

/// At most this many checks of one stream per round, so one stream far behind does not
/// starve the others (each is bounded: a minute of fine buckets, or one coarse bucket).
const MAX_CHECKS_PER_ROUND: usize = 8;

impl Daemon {
    /// Runs the checks that are due for `key`.
    pub(super) async fn check_stream(&mut self, key: &Key) -> Result<(), FollowError> {
        for _ in 0..MAX_CHECKS_PER_ROUND {
            let schedule = self.cfg.schedule;
            let Some(st) = self.state.streams.get_mut(key) else {
                return Ok(());
            };
            if st.gone {
                return Ok(());
            }
            // Time the forward reader has passed: all of it when it reached the end of the
            // stream (an event arriving there now is behind its position, the checks' to
            // find), else up to the newest event it wrote.
            let sealed = if self.caught_up.contains(key) {
                Some(i64::MAX)
            } else {
                st.last_timestamp
            };
            let Some(check) = st.ledger().due(now_ms(), sealed, &schedule) else {
                return Ok(());
            };
            self.run_check(key, check).await?;
        }
        Ok(())
    }

    /// One check: what CloudWatch holds in `[from, to)` against what the file holds.
    async fn run_check(&mut self, key: &Key, check: Check) -> Result<(), FollowError> {
        let span = if check.pass == Pass::Reconcile {
            COARSE_MS
        } else {
            FINE_MS
        };
        let format = self.format_of(key);
        // Pass 1: a digest per bucket, nothing kept. Reconciliation covers the first
        // non-empty coarse bucket only (and the empty hours before it).
        let mut digests: Vec<(i64, u64, u64)> = Vec::new();
        let mut end = check.to;
        let mut token: Option<String> = None;
        'pages: loop {
            let page = self
                .reader
                .range_page(&key.0, &key.1, (check.from, check.to), token.as_deref())
                .await
                .map_err(|f| FollowError::call("read log events again", f))?;
            for e in &page.events {
                let b = align(e.timestamp, span);
                if check.pass == Pass::Reconcile && digests.is_empty() {
                    end = end.min(b + COARSE_MS);
                }
                if e.timestamp >= end {
                    break 'pages;
                }
                let (count, sum) = line_digest(format, e);
                match digests.last_mut() {
                    Some(d) if d.0 == b => {
                        d.1 += count;
                        d.2 = d.2.wrapping_add(sum);
                    }
                    _ => digests.push((b, count, sum)),
                }
            }
            if page.events.is_empty() || page.next_forward_token == token {
                break;
            }
            token = page.next_forward_token;
        }
        let differ: Vec<i64> = {
            let st = self.state.streams.get_mut(key).expect("present");
            let ledger = st.ledger();
            digests
                .iter()
                .filter(|(b, count, sum)| {
                    ledger.bucket_at(*b).map_or((0, 0), |x| x.digest()) != (*count, *sum)
                })
                .map(|(b, _, _)| *b)
                .collect()
        };
        // Pass 2, only for buckets that differ: what is missing from the file.
        let mut missing: Vec<Event> = Vec::new();
        for b in differ {
            missing.extend(self.missing_in(key, b, (b, (b + span).min(end))).await?);
        }
        // From here to the save: no await (state invariant 2).
        self.append_late(key, check.pass, &missing)?;
        let st = self.state.streams.get_mut(key).expect("present");
        st.ledger().finish(Check { to: end, ..check });
        if check.pass == Pass::Final {
            st.ledger().prune(now_ms(), &self.cfg.schedule);
        }
        self.state.save()?;
        self.publish_one(key);
        Ok(())
    }

    /// The events of `range` (inside bucket `bucket`) that the file does not hold.
    async fn missing_in(
        &mut self,
        key: &Key,
        bucket: i64,
        range: (i64, i64),
    ) -> Result<Vec<Event>, FollowError> {
        let format = self.format_of(key);
        let mut have = {
            let st = self.state.streams.get_mut(key).expect("present");
            let path = self.cfg.output_dir.join(&st.file);
            let ranges = st
                .ledger()
                .bucket_at(bucket)
                .map(|b| b.ranges.clone())
                .unwrap_or_default();
            fingerprints_of(&path, &ranges)?
        };
        let mut missing = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .reader
                .range_page(&key.0, &key.1, range, token.as_deref())
                .await
                .map_err(|f| FollowError::call("read log events again", f))?;
            for e in &page.events {
                let (_, fp) = line_digest(format, e);
                if !have.take(fp) {
                    missing.push(e.clone());
                }
            }
            if page.events.is_empty() || page.next_forward_token == token {
                break;
            }
            token = page.next_forward_token;
        }
        Ok(missing)
    }

    /// `events` (read forward) less those in time the checks have read that the file holds
    /// already. Such events are rare: ones the forward read returns behind the early frontier
    /// (a stream that went quiet, checked up to now, then received events a little older
    /// than now); each bucket they fall in is fingerprinted back from the file once.
    pub(super) fn not_yet_written(
        &mut self,
        key: &Key,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, FollowError> {
        let format = self.format_of(key);
        let st = self.state.streams.get_mut(key).expect("present");
        let early = st.ledger().early_to.unwrap_or(i64::MIN);
        if events.first().is_none_or(|e| e.timestamp >= early) {
            return Ok(events);
        }
        let path = self.cfg.output_dir.join(&st.file);
        let ledger = st.ledger();
        let mut have: std::collections::HashMap<i64, Fingerprints> = Default::default();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            if e.timestamp >= early {
                out.push(e);
                continue;
            }
            let Some(bucket) = ledger.bucket_at(e.timestamp) else {
                out.push(e);
                continue;
            };
            let start = ledger.bucket_start(e.timestamp);
            let fps = match have.entry(start) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(fingerprints_of(&path, &bucket.ranges)?)
                }
            };
            if !fps.take(line_digest(format, &e).1) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Appends events found late, records them in the ledger, counts and logs them.
    fn append_late(&mut self, key: &Key, pass: Pass, events: &[Event]) -> Result<(), FollowError> {
        if events.is_empty() {
            return Ok(());
        }
        let format = self.format_of(key);
        let (buf, lines) = files::render_lines(format, events);
        let len = self.append(key, &buf)?;
        let st = self.state.streams.get_mut(key).expect("present");
        let base = st.offset;
        let ledger = st.ledger.get_or_insert_with(super::ledger::Ledger::new);
        for (e, (start, end, fp)) in events.iter().zip(lines) {
            ledger.record(e.timestamp, fp, (base + start, base + end), None);
        }
        st.offset = len;
        st.events += events.len() as u64;
        st.late_events += events.len() as u64;
        st.bytes += events.iter().map(|e| e.message.len() as u64).sum::<u64>();
        let oldest = events.iter().map(|e| e.timestamp).min().unwrap_or(0);
        let by = match pass {
            Pass::Early | Pass::Final => "the late-window check",
            Pass::Reconcile => "reconciliation",
        };
        log(&format!(
            "{}/{}: {} late event(s) found by {by} and appended (oldest {})",
            key.0,
            key.1,
            events.len(),
            format_rfc3339_ms(oldest)
        ));
        Ok(())
    }

    /// Appends `buf` to the stream's file after checking the file is what the state says
    /// (never appended to blindly); returns the new length.
    pub(super) fn append(&mut self, key: &Key, buf: &[u8]) -> Result<u64, FollowError> {
        let st = self.state.streams.get(key).expect("present");
        let path = self.cfg.output_dir.join(&st.file);
        let expected = st.offset + buf.len() as u64;
        let len = files::append_durably(&path, buf).map_err(|source| FollowError::Io {
            what: "cannot write",
            path: path.clone(),
            source,
        })?;
        if len != expected {
            log(&format!(
                "{}: its length is not what dockwatch wrote (another writer?)",
                path.display()
            ));
        }
        Ok(len)
    }

    fn format_of(&self, key: &Key) -> crate::cli::LineFormat {
        self.state
            .streams
            .get(key)
            .and_then(|s| s.format)
            .unwrap_or(self.cfg.line_format)
    }
}

/// (1, fingerprint) of an event's line as the file would hold it.
fn line_digest(format: crate::cli::LineFormat, e: &Event) -> (u64, u64) {
    let mut buf = Vec::with_capacity(e.message.len() + 32);
    files::render_into(&mut buf, format, std::slice::from_ref(e));
    buf.pop();
    (1, fingerprint(&buf))
}

/// The fingerprints of the lines in `ranges` of the file.
fn fingerprints_of(
    path: &std::path::Path,
    ranges: &[(u64, u64)],
) -> Result<Fingerprints, FollowError> {
    let mut have = Fingerprints::default();
    for r in ranges {
        let bytes = files::read_range(path, *r).map_err(|source| FollowError::Io {
            what: "cannot read back",
            path: path.to_path_buf(),
            source,
        })?;
        have.add_lines(&bytes);
    }
    Ok(have)
}
