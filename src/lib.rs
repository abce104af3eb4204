//! dockwatch: run a Docker container and ship everything it writes to AWS CloudWatch Logs,
//! without losing a line.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! docker (source: container, logs endpoint) -> framing (bytes -> events)
//!   -> batcher (events -> PutLogEvents batches) -> sink (CloudWatch client, request, retry)
//! ```
//!
//! [`run`] wires the stages together for the main job, with shutdown passed in.
//!
//! [`follow`] is the way back: `tail` prints CloudWatch log groups, `download` keeps local
//! files of their streams up to date.

pub mod agent;
pub mod batcher;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod docker;
pub mod ecs;
pub mod exit_codes;
pub mod follow;
pub mod framing;
pub mod reader;
pub mod run;
pub mod sink;
pub mod spool;
pub mod transform;
pub mod trigger;
