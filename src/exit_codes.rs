//! Exit codes, in one place. Otherwise dockwatch exits with the container's own exit code,
//! like `docker run`.

/// `tail` and `download`: a failure other than a usage error (missing group, AWS refused).
pub const ERROR: i32 = 1;
/// Invalid arguments or configuration (clap's code for usage errors too).
pub const USAGE: i32 = 2;
/// dockwatch itself failed: Docker engine, image, AWS credentials or endpoint, delivery.
pub const FAILURE: i32 = 125;
/// The image has no such shell to run the command with.
pub(crate) const NO_SHELL: i32 = 127;
/// Interrupted by SIGINT (128 + 2).
pub(crate) const SIGINT: i32 = 130;
/// Interrupted by SIGTERM (128 + 15).
pub(crate) const SIGTERM: i32 = 143;

/// A container exit code as a process exit code (0-255).
pub(crate) fn from_container(code: i64) -> i32 {
    code.clamp(0, 255) as i32
}
