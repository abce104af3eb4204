//! The `dockwatch` binary: parse, run, and map every error to an exit code, in one place.

use std::process::ExitCode;

use clap::Parser;
use dockwatch::agent::{AgentError, remote, server};
use dockwatch::cli::{Cli, Command, Engine};
use dockwatch::config::RunConfig;
use dockwatch::exit_codes;
use dockwatch::follow::{FollowError, download, tail};
use dockwatch::run::{self, Interrupts, Signal};
use dockwatch::{ecs, trigger};
use tokio::sync::watch;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version exit 0; usage errors exit 2 with clap's message.
        Err(e) => e.exit(),
    };
    init_tracing(cli.verbose);
    // One TLS crypto provider for the process (the agent's TLS and the AWS SDK share it).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = match cli.command {
        Some(Command::Run(a)) => *a,
        Some(Command::Resume(a)) => return to_exit(block_on(|i| run::resume(*a, i))),
        Some(Command::Tail(a)) => return to_exit(block_on(|i| tail::tail(*a, i))),
        Some(Command::Download(a)) => return to_exit(block_on(|i| download::download(*a, i))),
        Some(Command::Agent(a)) => return to_exit(block_on(|i| server::serve(*a, i))),
        Some(Command::Remote(a)) => return to_exit(block_on(|i| remote::remote(*a, i))),
        Some(Command::OnUpload(a)) => return to_exit(block_on(|i| trigger::on_upload(*a, i))),
        None => cli.run,
    };
    if args.ecs.on == Engine::Ecs {
        return to_exit(block_on(|i| ecs::run_main(args, i)));
    }
    let code = match RunConfig::from_args(args) {
        Err(e) => {
            eprintln!("dockwatch: error: {e}");
            exit_codes::USAGE
        }
        Ok(cfg) => block_on(|i| run::run(cfg, i)),
    };
    to_exit(code)
}

fn to_exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a job on a new runtime with signals wired in; errors become their exit codes.
fn block_on<F, Fut, E>(job: F) -> i32
where
    F: FnOnce(watch::Receiver<Interrupts>) -> Fut,
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

impl ExitStatus for run::RunError {
    fn exit_code(&self) -> i32 {
        run::RunError::exit_code(self)
    }
}

impl ExitStatus for trigger::TriggerError {
    fn exit_code(&self) -> i32 {
        trigger::TriggerError::exit_code(self)
    }
}

impl ExitStatus for FollowError {
    fn exit_code(&self) -> i32 {
        FollowError::exit_code(self)
    }
}

/// SIGINT and SIGTERM, counted, for [`run::run`].
fn listen_for_signals() -> watch::Receiver<Interrupts> {
    let (tx, rx) = watch::channel(Interrupts::default());
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
            tx.send_modify(|i| {
                i.count += 1;
                i.first.get_or_insert(s);
            });
        }
    });
    rx
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
