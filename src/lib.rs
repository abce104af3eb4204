//! dockwatch: run a Docker container and ship everything it writes to AWS CloudWatch Logs,
//! without losing a line; read it back; run containers for an agent's clients and for S3
//! uploads.
//!
//! The tree, lower modules first (a module imports only those above it in this list):
//!
//! ```text
//! util      time as users write it, backoff, durable writes, a stable hash, error chains
//! cli       the raw command line (clap), nothing else
//! shutdown  what a signal asks for (graceful stop, kill, abandon), passed in
//! aws       SDK configuration, clients, retry policy, CloudWatch limits and calls
//! config    the validated configuration, built once from cli (the container and docker run's
//!           options in config::container)
//! docker    the engine: connection, container life cycle, log and attach streams
//! pipeline  the main job's pipeline: reader → framing → transform → batcher → sink, and the
//!           job that runs it (`run`, `resume`, the agent's and on-upload's launches)
//! ship      `dockwatch ship`: every selected container of the host, through that pipeline
//! follow    the way back: tail, download
//! ecs       the main job on ECS/Fargate
//! trigger   on-upload: a container per S3 upload
//! agent     the gRPC agent and its CLI
//! web       a web page of this host's containers and their logs
//! ```
//!
//! `main` parses, runs, and maps errors to exit codes ([`exit_codes`]) in one place.

/// `eprintln!` that never panics: a closed stderr (`2>&1 >/dev/null | head -1`) must not stop
/// shipping or clean-up, so a failed write of a message is ignored.
#[doc(hidden)]
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics on a closed stdout (`| true`, `| head`).
#[doc(hidden)]
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($t)*);
    }};
}

pub mod agent;
pub mod aws;
pub mod cli;
pub mod config;
pub mod docker;
pub mod ecs;
pub mod exit_codes;
pub mod follow;
pub mod pipeline;
pub mod ship;
pub mod shutdown;
pub mod trigger;
pub mod util;
pub mod web;
