//! The end-to-end suite, one test binary: the real `dockwatch` binary against a real Docker
//! engine, moto and the strict CloudWatch server. One binary compiles the harness
//! ([`common`], [`strict_server`]) once instead of once per file (as ripgrep's and fd's
//! suites do); nextest still runs every test in its own process.

mod cli;
mod common;
mod private_engine;
mod strict_server;

mod agent;
mod attach;
mod docker_run;
mod engine_connection;
mod errors;
mod faults;
mod follow;
mod interrupts;
mod pull;
mod run;
mod ship;
mod ship_files;
mod trigger;
mod volume;
mod web;
