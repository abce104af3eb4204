//! Who runs an object: once per (bucket, key, ETag), whether its notification arrives twice
//! while the first run is still going, or several `on-upload` workers on different hosts
//! share one queue.
//!
//! # Local (the default, one host)
//! The objects running in this process, in memory: a second message for one of them waits
//! (its message kept hidden) until the first run ends, then finds its record ([`super::store`])
//! and is acknowledged, or runs if the first one failed.
//!
//! # Shared (`--claims s3://BUCKET/PREFIX`, several hosts)
//! One small JSON object per object id, `PREFIX/<hash>.json`:
//! `{"id", "state": "running"|"succeeded"|"failed", "owner", "lease_until": MS, "attempt"}`,
//! written only with S3's conditional writes, which are atomic:
//! - **claim**: `PutObject If-None-Match: *` creates the record as `running` with a lease
//!   (`--lease`, 2 min). Only one worker can create it.
//! - a record already there: `succeeded` → nothing to do; `running` with a lease still valid →
//!   busy, wait and look again; `running` with an expired lease (its worker died) or `failed`
//!   → **take over** with `PutObject If-Match: <the ETag read>`: of several workers racing,
//!   exactly one write succeeds (S3 answers 412 PreconditionFailed, or 409 for a concurrent
//!   conditional write, to the others, which look again).
//! - **renew**: the owner rewrites its record `If-Match` its last ETag every third of the
//!   lease; a renewal refused means another worker took the object over (this one was too
//!   slow): it is logged, and the outcome of this run is not recorded over the other's.
//! - **finish**: `succeeded` (never overwritten: every write is conditional on the ETag this
//!   worker wrote last) or `failed` with the lease ended, so that the next delivery of the
//!   message can take it.
//!
//! Leases are wall-clock times: hosts' clocks must agree to well within the lease (NTP).
//! A worker SIGKILLed mid-task holds its object until its lease expires; then another worker
//! runs it again from the start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::aws::retry::chain;
pub(crate) use crate::config::SharedAt;
use crate::util::time::now_ms;

/// What a claim found.
pub(crate) enum Claim {
    /// This worker runs the object.
    Won(Lease),
    /// It succeeded before: nothing to do.
    Done,
    /// Another run holds it now; look again after this long (or when woken, locally).
    Busy(Wait),
}

/// How a busy claim is waited for.
pub(crate) enum Wait {
    /// Until the local run ends.
    Local(Arc<Notify>),
    /// Polling the shared record.
    Poll(Duration),
}

/// A won claim: what finishing or renewing it needs.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    id: String,
    /// The shared record's ETag as this worker last wrote it.
    etag: Option<String>,
    attempt: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    state: String,
    owner: String,
    lease_until: i64,
    attempt: u32,
}

/// The claims of this process: local, or shared through S3.
pub(crate) struct Claims {
    running: Mutex<HashMap<String, Arc<Notify>>>,
    shared: Option<Shared>,
}

struct Shared {
    s3: aws_sdk_s3::Client,
    at: SharedAt,
    lease: Duration,
    owner: String,
}

/// A failure of the claim store (S3 unreachable, access denied, ...).
#[derive(Debug, thiserror::Error)]
#[error("the claim store s3://{bucket}/{key}: {detail}")]
pub(crate) struct ClaimError {
    bucket: String,
    key: String,
    detail: String,
}

enum Put {
    Written(Option<String>),
    /// The condition failed: someone else wrote first.
    Lost,
}

impl Claims {
    pub(crate) fn local() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    pub(crate) fn shared(s3: aws_sdk_s3::Client, at: SharedAt, lease: Duration) -> Self {
        let owner = format!(
            "{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            running: Mutex::new(HashMap::new()),
            shared: Some(Shared {
                s3,
                at,
                lease,
                owner,
            }),
        }
    }

    /// How often a won lease must be renewed (`None`: local claims need none).
    pub(crate) fn renew_every(&self) -> Option<Duration> {
        self.shared.as_ref().map(|s| s.lease / 3)
    }

    /// Tries to take `id`; `done_locally` says whether this host's store has it succeeded.
    pub(crate) async fn claim(&self, id: &str, done_locally: bool) -> Result<Claim, ClaimError> {
        if done_locally {
            return Ok(Claim::Done);
        }
        {
            let mut running = self.running.lock().expect("claims");
            if let Some(n) = running.get(id) {
                return Ok(Claim::Busy(Wait::Local(n.clone())));
            }
            running.insert(id.to_string(), Arc::new(Notify::new()));
        }
        let r = match &self.shared {
            None => Ok(Claim::Won(Lease {
                id: id.to_string(),
                etag: None,
                attempt: 1,
            })),
            Some(s) => s.claim(id).await,
        };
        if !matches!(r, Ok(Claim::Won(_))) {
            self.release_local(id);
        }
        r
    }

    /// Extends a won lease; false when another worker has taken the object over.
    pub(crate) async fn renew(&self, lease: &mut Lease) -> Result<bool, ClaimError> {
        match &self.shared {
            None => Ok(true),
            Some(s) => s.write(lease, "running").await,
        }
    }

    /// Ends a won claim with its outcome; false when another worker had taken it over.
    pub(crate) async fn finish(
        &self,
        mut lease: Lease,
        succeeded: bool,
    ) -> Result<bool, ClaimError> {
        let r = match &self.shared {
            None => Ok(true),
            Some(s) => {
                let state = if succeeded { "succeeded" } else { "failed" };
                s.write(&mut lease, state).await
            }
        };
        self.release_local(&lease.id);
        r
    }

    fn release_local(&self, id: &str) {
        if let Some(n) = self.running.lock().expect("claims").remove(id) {
            n.notify_waiters();
        }
    }
}

impl Shared {
    fn key(&self, id: &str) -> String {
        format!(
            "{}{:016x}.json",
            self.at.prefix,
            crate::util::fnv1a(id.as_bytes())
        )
    }

    fn fail(&self, id: &str, detail: String) -> ClaimError {
        ClaimError {
            bucket: self.at.bucket.clone(),
            key: self.key(id),
            detail,
        }
    }

    fn record(&self, id: &str, state: &str, attempt: u32) -> Vec<u8> {
        let lease_until = if state == "running" {
            now_ms() + self.lease.as_millis() as i64
        } else {
            0
        };
        serde_json::to_vec(&Record {
            id: id.to_string(),
            state: state.to_string(),
            owner: self.owner.clone(),
            lease_until,
            attempt,
        })
        .expect("serialises")
    }

    async fn claim(&self, id: &str) -> Result<Claim, ClaimError> {
        match self.put(id, self.record(id, "running", 1), None).await? {
            Put::Written(etag) => {
                return Ok(Claim::Won(Lease {
                    id: id.to_string(),
                    etag,
                    attempt: 1,
                }));
            }
            Put::Lost => {}
        }
        let Some((rec, etag)) = self.read(id).await? else {
            return Ok(Claim::Busy(Wait::Poll(Duration::from_millis(200))));
        };
        let expired = rec.lease_until < now_ms();
        match rec.state.as_str() {
            "succeeded" => Ok(Claim::Done),
            "running" if !expired => Ok(Claim::Busy(Wait::Poll(
                (self.lease / 8).clamp(Duration::from_millis(200), Duration::from_secs(5)),
            ))),
            _ => {
                let attempt = rec.attempt + 1;
                let body = self.record(id, "running", attempt);
                match self.put(id, body, Some(&etag)).await? {
                    Put::Written(etag) => {
                        if rec.state == "running" {
                            tracing::warn!(
                                "{id}: the lease of {} expired; taking the object over",
                                rec.owner
                            );
                        }
                        Ok(Claim::Won(Lease {
                            id: id.to_string(),
                            etag,
                            attempt,
                        }))
                    }
                    Put::Lost => Ok(Claim::Busy(Wait::Poll(Duration::from_millis(200)))),
                }
            }
        }
    }

    /// Rewrites the lease's record (If-Match its last ETag); false when that lost.
    async fn write(&self, lease: &mut Lease, state: &str) -> Result<bool, ClaimError> {
        let body = self.record(&lease.id, state, lease.attempt);
        match self.put(&lease.id, body, lease.etag.as_deref()).await? {
            Put::Written(etag) => {
                lease.etag = etag;
                Ok(true)
            }
            Put::Lost => Ok(false),
        }
    }

    /// A conditional PutObject: `If-Match: etag`, or `If-None-Match: *` without one.
    async fn put(&self, id: &str, body: Vec<u8>, etag: Option<&str>) -> Result<Put, ClaimError> {
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.at.bucket)
            .key(self.key(id))
            .content_type("application/json")
            .body(body.into());
        req = match etag {
            Some(e) => req.if_match(e),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(o) => Ok(Put::Written(o.e_tag().map(str::to_string))),
            Err(e) if lost_race(&e) => Ok(Put::Lost),
            Err(e) => Err(self.fail(id, chain(&e))),
        }
    }

    async fn read(&self, id: &str) -> Result<Option<(Record, String)>, ClaimError> {
        let r = self
            .s3
            .get_object()
            .bucket(&self.at.bucket)
            .key(self.key(id))
            .send()
            .await;
        let o = match r {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.fail(id, chain(&e))),
        };
        let etag = o.e_tag().unwrap_or_default().to_string();
        let bytes = o
            .body
            .collect()
            .await
            .map_err(|e| self.fail(id, e.to_string()))?
            .into_bytes();
        let rec: Record = serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(id, format!("not a claim record: {e}")))?;
        Ok(Some((rec, etag)))
    }
}

/// S3's answers to a conditional write that another writer won: 412 PreconditionFailed, or
/// 409 ConditionalRequestConflict while another conditional write is in progress.
fn lost_race<E: ProvideErrorMetadata, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool {
    matches!(
        e.as_service_error().and_then(|s| s.code()),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_local_claim_waits_for_the_first() {
        let c = Claims::local();
        let Ok(Claim::Won(lease)) = c.claim("b/k@e", false).await else {
            panic!("first claim")
        };
        let Ok(Claim::Busy(Wait::Local(n))) = c.claim("b/k@e", false).await else {
            panic!("second claim is busy")
        };
        let woken = n.notified();
        assert!(c.finish(lease, true).await.unwrap());
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("the waiter is woken");
        assert!(matches!(c.claim("b/k@e", true).await, Ok(Claim::Done)));
        assert!(matches!(c.claim("b/k@e", false).await, Ok(Claim::Won(_))));
    }
}
