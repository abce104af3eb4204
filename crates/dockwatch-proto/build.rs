//! Generates the agent's messages and service from `proto/` with protox (a protobuf compiler
//! in Rust), so no system `protoc` is needed; also writes the descriptor set for reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("dockwatch/agent/v1/agent.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("agent_descriptor.bin"), fds.encode_to_vec())?;
    // `bytes` fields as `bytes::Bytes`: log and exec data pass through without copies.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
