//! The dockwatch agent protocol (`proto/dockwatch/agent/v1/agent.proto`): messages, the
//! tonic server and client, and the encoded descriptor set for gRPC server reflection.
//!
//! Kept apart from the `dockwatch` crate so that code generation and tonic's build stay out
//! of the core's edit-compile-test loop.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("dockwatch.agent.v1");
}

/// The encoded `FileDescriptorSet` of the agent protocol, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agent_descriptor.bin"));

pub use prost;
pub use tonic;
