//! The `dockwatch` binary: parse, run, and map every error to an exit code, in one place.

use std::process::ExitCode;

use clap::Parser;
use dockwatch::agent::{AgentError, remote, server};
use dockwatch::cli::{Cli, Command};
use dockwatch::config::{ConfigError, OnUploadConfig, ResumeConfig, RunConfig};
use dockwatch::ecs::EcsError;
use dockwatch::exit_codes;
use dockwatch::follow::{FollowError, download, tail};
use dockwatch::ship::job::{self, RunError};
use dockwatch::shutdown::{self, Shutdown, Signal};
use dockwatch::trigger::{self, TriggerError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version exit 0; usage errors exit 2 with clap's message.
        Err(e) => e.exit(),
    };
    init_tracing(cli.verbose);
    // One TLS crypto provider for the process (the agent's TLS and the AWS SDK share it).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let code = match cli.command {
        Some(Command::Run(a)) => run_main(*a),
        Some(Command::Resume(a)) => match ResumeConfig::from_args(*a) {
            Ok(cfg) => block_on(|s| job::resume(cfg, s)),
            Err(e) => usage(e),
        },
        Some(Command::Tail(a)) => block_on(|s| tail::tail(*a, s)),
        Some(Command::Download(a)) => block_on(|s| download::download(*a, s)),
        Some(Command::Agent(a)) => block_on(|s| server::serve(*a, s)),
        Some(Command::Remote(a)) => block_on(|s| remote::remote(*a, s)),
        Some(Command::OnUpload(a)) => match OnUploadConfig::from_args(*a) {
            Ok(cfg) => block_on(|s| trigger::on_upload(cfg, s)),
            Err(e) => usage(e),
        },
        None => run_main(cli.run),
    };
    to_exit(code)
}

/// The main job, here or on ECS.
fn run_main(args: dockwatch::cli::RunArgs) -> i32 {
    match RunConfig::from_args(args) {
        Err(e) => usage(e),
        Ok(mut cfg) => match cfg.ecs.take() {
            Some(ecs) => block_on(|s| dockwatch::ecs::run_main(cfg, ecs, s)),
            None => block_on(|s| job::run(cfg, s)),
        },
    }
}

/// An invalid argument: one line, exit code 2.
fn usage(e: ConfigError) -> i32 {
    eprintln!("dockwatch: error: {e}");
    exit_codes::USAGE
}

fn to_exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a job on a new runtime with signals wired in; errors become their exit codes.
fn block_on<F, Fut, E>(job: F) -> i32
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<i32, E>>,
    E: ExitStatus + std::error::Error + Send + Sync + 'static,
{
    // One thread: the pipeline is I/O-bound and shares two cores with the engine; a
    // multi-threaded runtime spent more on cross-thread wake-ups than on the work (measured
    // with perf, see the README).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dockwatch: error: cannot start the async runtime: {e}");
            return exit_codes::FAILURE;
        }
    };
    rt.block_on(async {
        match job(listen_for_signals()).await {
            Ok(code) => code,
            Err(e) => {
                let code = e.exit_code();
                eprintln!("{}{:#}", e.prefix(), anyhow::Error::from(e));
                code
            }
        }
    })
}

/// An error that knows its exit code.
trait ExitStatus {
    fn exit_code(&self) -> i32;
    /// What starts the error line.
    fn prefix(&self) -> &'static str {
        "dockwatch: error: "
    }
}

impl ExitStatus for AgentError {
    fn exit_code(&self) -> i32 {
        AgentError::exit_code(self)
    }
}

/// `dockwatch remote` speaks like the Docker CLI: `Error: container 'x' not found`.
impl ExitStatus for remote::RemoteError {
    fn exit_code(&self) -> i32 {
        self.code
    }
    fn prefix(&self) -> &'static str {
        "Error: "
    }
}

impl ExitStatus for RunError {
    fn exit_code(&self) -> i32 {
        RunError::exit_code(self)
    }
}

impl ExitStatus for TriggerError {
    fn exit_code(&self) -> i32 {
        TriggerError::exit_code(self)
    }
}

impl ExitStatus for EcsError {
    fn exit_code(&self) -> i32 {
        match self {
            EcsError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            _ => exit_codes::ERROR,
        }
    }
}

impl ExitStatus for FollowError {
    fn exit_code(&self) -> i32 {
        FollowError::exit_code(self)
    }
}

/// SIGINT and SIGTERM, each one more step of [`Shutdown`].
fn listen_for_signals() -> Shutdown {
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let s = tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
            trigger.signal(s);
        }
    });
    shutdown
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "dockwatch=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
