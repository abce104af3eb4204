//! The `dockwatch` binary: parse, run, and map every error to an exit code, in one place.

use std::process::ExitCode;

use clap::Parser;
use dockwatch::agent::{AgentError, remote, server};
use dockwatch::cli::{Cli, Command};
use dockwatch::config::{ConfigError, OnUploadConfig, ResumeConfig, RunConfig};
use dockwatch::ecs::EcsError;
use dockwatch::exit_codes;
use dockwatch::follow::{FollowError, download, tail};
use dockwatch::pipeline::job::{self, RunError};
use dockwatch::ship::{self, HostError};
use dockwatch::shutdown::{self, Shutdown, Signal};
use dockwatch::trigger::{self, TriggerError};

fn main() -> ExitCode {
    block_stop_signals();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.verbose);
    let verbose = cli.verbose > 0;
    // One TLS crypto provider for the process (the agent's TLS and the AWS SDK share it).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let code = match cli.command {
        Some(Command::Run(a)) => run_main(*a, verbose),
        Some(Command::Resume(a)) => match ResumeConfig::from_args(*a, verbose) {
            Ok(cfg) => block_on(|s| job::resume(cfg, s)),
            Err(e) => usage(e),
        },
        Some(Command::Tail(a)) => block_on(|s| tail::tail(*a, s)),
        Some(Command::Download(a)) => block_on(|s| download::download(*a, s)),
        Some(Command::Ship(a)) => block_on(|s| ship::ship(*a, s)),
        Some(Command::Agent(a)) => block_on(|s| server::serve(*a, s)),
        Some(Command::Remote(a)) => block_on(|s| remote::remote(*a, s)),
        Some(Command::OnUpload(a)) => match OnUploadConfig::from_args(*a) {
            Ok(cfg) => block_on(|s| trigger::on_upload(cfg, s)),
            Err(e) => usage(e),
        },
        Some(Command::Web(a)) => block_on(|s| dockwatch::web::web(*a, s)),
        Some(Command::Completions { shell }) => print_bytes(&dockwatch::cli::completions(shell)),
        Some(Command::Man) => print_bytes(&dockwatch::cli::man_page()),
        None => run_main(cli.run, verbose),
    };
    to_exit(code)
}

/// Writes generated text to stdout; a closed pipe (`| head`) is a normal end.
fn print_bytes(b: &[u8]) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(b).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            dockwatch::say!("dockwatch: error: cannot write to standard output: {e}");
            dockwatch::exit_codes::ERROR
        }
    }
}

/// The main job, here or on ECS.
fn run_main(args: dockwatch::cli::RunArgs, verbose: bool) -> i32 {
    match RunConfig::from_cli(args, verbose) {
        Err(e) => usage(e),
        Ok(mut cfg) => match cfg.ecs.take() {
            Some(ecs) => block_on(|s| dockwatch::ecs::run_main(cfg, ecs, s)),
            None => block_on(|s| job::run(cfg, s)),
        },
    }
}

/// What clap refused: help and version as clap prints them (exit 0; no arguments at all
/// show the help, exit 2), every usage error as one line, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // A closed stdout (`dockwatch --help | head -1`) is a normal end.
            let _ = e.print();
            to_exit(e.exit_code())
        }
        _ => {
            let argv: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            dockwatch::say!("{}", dockwatch::cli::usage_error_line(&e, &argv));
            to_exit(exit_codes::USAGE)
        }
    }
}

/// An invalid argument: one line, exit code 2.
fn usage(e: ConfigError) -> i32 {
    dockwatch::say!("dockwatch: error: {e}");
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
            dockwatch::say!("dockwatch: error: cannot start the async runtime: {e}");
            return exit_codes::FAILURE;
        }
    };
    rt.block_on(async {
        match job(listen_for_signals()).await {
            Ok(code) => code,
            Err(e) => {
                let (code, prefix) = (e.exit_code(), e.prefix());
                // Each cause once (an io::Error in the message is not repeated after it).
                let text = dockwatch::util::chain(&e);
                // An error with nothing to say (a closed pipe) ends quietly.
                if !text.is_empty() {
                    dockwatch::say!("{prefix}{text}");
                }
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

/// The main job on ECS exits as the main job does: 125 when dockwatch failed.
impl ExitStatus for EcsError {
    fn exit_code(&self) -> i32 {
        match self {
            EcsError::Aws(e) if e.is_usage() => exit_codes::USAGE,
            _ => exit_codes::FAILURE,
        }
    }
}

impl ExitStatus for HostError {
    fn exit_code(&self) -> i32 {
        HostError::exit_code(self)
    }
}

impl ExitStatus for dockwatch::web::WebError {
    fn exit_code(&self) -> i32 {
        dockwatch::web::WebError::exit_code(self)
    }
}

impl ExitStatus for FollowError {
    fn exit_code(&self) -> i32 {
        FollowError::exit_code(self)
    }
}

/// SIGINT and SIGTERM, each one more step of [`Shutdown`].
///
/// Every delivered signal counts. The two are blocked in every thread (see
/// [`block_stop_signals`]) and taken by one thread that waits for nothing else (`sigwait`),
/// then handed to the runtime over a channel. Measured under a flood, with two SIGINTs 0.3 ms
/// apart: tokio's own signal streams coalesce signals that arrive between two polls, and a
/// counting handler on a busy thread still lost the second in some runs, because the kernel
/// keeps one pending SIGINT and merges the next into it until the chosen thread runs; an idle
/// thread waiting in `sigwait` is woken at once. (Signals closer together than a thread's
/// wake-up are merged by the kernel: that much no process can tell apart.)
fn listen_for_signals() -> Shutdown {
    let (trigger, shutdown) = shutdown::channel();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Signal>(16);
    let waiter = std::thread::Builder::new()
        .name("dockwatch-signals".into())
        .spawn(move || {
            let set = stop_signals();
            prefer_this_thread();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is an initialised signal set and `sig` a valid out-pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let s = if sig == libc::SIGINT {
                    Signal::Interrupt
                } else {
                    Signal::Terminate
                };
                if tx.blocking_send(s).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = waiter {
        dockwatch::say!("dockwatch: warning: cannot watch for signals: {e}");
        unblock_stop_signals();
        return shutdown;
    }
    tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            trigger.signal(s);
        }
    });
    shutdown
}

/// Asks the scheduler to run this thread before ordinary ones when it wakes (SCHED_FIFO, the
/// lowest real-time priority): it only ever runs for a moment per signal. Needs privileges
/// (root or CAP_SYS_NICE); without them the thread stays an ordinary one.
fn prefer_this_thread() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: this thread's own handle and a valid parameter.
    let _ = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
}

/// SIGINT and SIGTERM as a signal set.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts (called first in
/// `main`, before any thread exists), so that only the waiting thread takes them.
fn block_stop_signals() {
    let set = stop_signals();
    // SAFETY: a valid set; the old mask is not asked for.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn unblock_stop_signals() {
    let set = stop_signals();
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // Other crates' warnings (the SDK's ~900-character IMDS notes before a "no region"
        // error) only with -v: dockwatch says what went wrong in its own words.
        0 => "dockwatch=warn,error",
        1 => "dockwatch=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a terminal: a file or the journal gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
