//! The main job's pipeline, one module per stage, in the order the bytes travel:
//!
//! ```text
//! docker (engine) ─► reader (log frames; echo on its own thread) ─► framing (bytes → events)
//!   ─► transform (strip ANSI, multi-line, JSON) ─► batcher (CloudWatch's rules)
//!   ─► sink (PutLogEvents, requests in flight, retry) ─► checkpoint (delivered position)
//!                                                      └► spool (what could not be delivered)
//! ```
//!
//! [`job`] runs it for one container (`dockwatch run`, `dockwatch resume`, the agent's
//! LaunchContainer, on-upload's tasks); [`supervisor`] watches the reader and the shipper
//! through to a report. A stage imports only the stages before it.

pub(crate) mod batcher;
pub(crate) mod buffer;
pub(crate) mod checkpoint;
pub(crate) mod echo;
pub mod framing;
pub mod job;
pub(crate) mod reader;
pub(crate) mod sink;
pub(crate) mod spool;
pub(crate) mod supervisor;
pub(crate) mod transform;
