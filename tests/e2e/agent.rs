//! The gRPC agent and `dockwatch remote`: a real agent process on loopback, the real engine,
//! the real CLI (and a tonic client where the CLI cannot show it: backpressure, health,
//! reflection).

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use dockwatch_proto::tonic;
use dockwatch_proto::v1::agent_client::AgentClient;
use dockwatch_proto::v1::{GetLogsRequest, get_logs_response};

/// A running `dockwatch agent`; stopped (SIGTERM) when dropped.
struct Agent {
    child: Child,
    host: String,
    port: u16,
    dir: PathBuf,
    /// This test's container label value.
    label: String,
}

impl Agent {
    fn start(extra: &[&str]) -> Agent {
        Self::start_with(extra, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("dwagent"));
        std::fs::create_dir_all(&dir).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = dockwatch_with_env(&moto_url());
        cmd.args(["agent", "--listen", &listen])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .args(extra)
            .env_remove("DOCKWATCH_AGENT_TOKEN")
            .env_remove("DOCKWATCH_AGENT_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        wait_for_port(port, Duration::from_secs(20));
        Agent {
            child,
            host: listen,
            port,
            dir,
            label: unique("agent"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `dockwatch remote --host THIS ARGS...`.
    fn remote(&self, args: &[&str]) -> Output {
        self.remote_cmd(args).output().unwrap()
    }

    fn remote_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = dockwatch();
        c.arg("remote")
            .args(["--host", &self.host])
            .args(args)
            .env_remove("DOCKWATCH_HOST")
            .env_remove("DOCKWATCH_TOKEN")
            .env_remove("DOCKWATCH_TOKEN_FILE");
        for v in ["CA", "CERT", "KEY", "DOMAIN"] {
            c.env_remove(format!("DOCKWATCH_TLS_{v}"));
        }
        c
    }

    /// Launches a container with this test's label; returns its id.
    fn launch(&self, name: &str, command: &str) -> String {
        let label = format!("dockwatch.test={}", self.label);
        let o = self.remote(&[
            "launch",
            "--image",
            IMAGE,
            "--command",
            command,
            "--name",
            name,
            "--label",
            &label,
        ]);
        assert!(o.status.success(), "launch: {}", stderr(&o));
        stdout(&o).trim().to_string()
    }

    fn wait_exited(&self, name: &str) {
        let ok = wait_until(Duration::from_secs(60), || {
            let o = std::process::Command::new("docker")
                .args(["inspect", "-f", "{{.State.Running}}", name])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim() == "false"
        });
        assert!(ok, "{name} did not exit");
    }

    /// A tonic client; use it inside the runtime that made it.
    async fn client(&self) -> AgentClient<tonic::transport::Channel> {
        AgentClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        cleanup(&self.label);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bytes_out(o: &Output) -> (&[u8], &[u8]) {
    (&o.stdout, &o.stderr)
}

/// Strips `docker logs -t` prefixes, checking each is an RFC 3339 time.
fn strip_timestamps(text: &str) -> String {
    text.lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                "{l:?}"
            );
            format!("{rest}\n")
        })
        .collect()
}

#[test]
fn logs_every_option_alone_and_combined() {
    let a = Agent::start(&[]);
    // Known output: stdout and stderr lines, binary bytes (NUL, controls, DEL, UTF-8), a
    // multi-line block, no final newline.
    let name = unique("known");
    a.launch(
        &name,
        r#"echo out-1; echo err-1 >&2; printf 'bin \000\001\033\177 \303\251 end\n'; printf 'multi\nline\nblock\n'; echo err-2 >&2; printf 'last without newline'"#,
    );
    a.wait_exited(&name);
    let want_out: &[u8] =
        b"out-1\nbin \x00\x01\x1b\x7f \xc3\xa9 end\nmulti\nline\nblock\nlast without newline";
    let want_err: &[u8] = b"err-1\nerr-2\n";

    let o = a.remote(&["logs", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(bytes_out(&o), (want_out, want_err), "byte for byte");
    let o = a.remote(&["logs", &name, "--no-stderr"]);
    assert_eq!(bytes_out(&o), (want_out, &b""[..]));
    let o = a.remote(&["logs", &name, "--no-stdout"]);
    assert_eq!(bytes_out(&o), (&b""[..], want_err));

    // Timestamps: each message prefixed, nothing else changed.
    let o = a.remote(&["logs", &name, "-t", "--no-stdout"]);
    assert_eq!(strip_timestamps(&stderr(&o)), "err-1\nerr-2\n");
    // since / until, relative, RFC 3339 and Unix seconds.
    let o = a.remote(&["logs", &name, "--since", "1h"]);
    assert_eq!(bytes_out(&o), (want_out, want_err));
    let o = a.remote(&["logs", &name, "--since", "2999-01-01T00:00:00Z"]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());
    let o = a.remote(&["logs", &name, "--until", "1000000000"]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());
    let o = a.remote(&[
        "logs",
        &name,
        "--since",
        "1000000000.5",
        "--until",
        "0s",
        "--no-stdout",
    ]);
    assert_eq!(bytes_out(&o), (&b""[..], want_err));

    // Bytes that are not UTF-8: exactly what the engine holds, i.e. what `docker logs` gives
    // (its json-file driver stores each invalid byte as U+FFFD).
    let raw = unique("raw");
    a.launch(
        &raw,
        r"printf '\377\376\375 x\n'; head -c 3000 /dev/urandom; printf 'e\n' >&2",
    );
    a.wait_exited(&raw);
    let o = a.remote(&["logs", &raw]);
    let d = std::process::Command::new("docker")
        .args(["logs", &raw])
        .output()
        .unwrap();
    assert!(
        o.stdout == d.stdout && o.stderr == d.stderr,
        "the agent's bytes differ from docker logs'"
    );
    assert!(o.stdout.len() > 3000 && o.stderr == b"e\n");

    // 100,000 lines, the last 100.
    let big = unique("big");
    a.launch(&big, "seq 1 100000");
    a.wait_exited(&big);
    let o = a.remote(&["logs", &big, "--tail", "100"]);
    let want: String = (99_901..=100_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(stdout(&o), want);
    // The tail counts the engine's messages of both streams, then selects (as the engine does).
    let o = a.remote(&["logs", &big, "--timestamps", "--no-stderr", "--tail", "3"]);
    assert_eq!(strip_timestamps(&stdout(&o)), "99998\n99999\n100000\n");
    let o = a.remote(&["logs", &big, "-n", "0"]);
    assert_eq!(stdout(&o).lines().count(), 100_000, "tail 0 means all");
}

/// A TCP relay that can freeze: while frozen it forwards nothing either way and keeps both
/// connections open, as a client behind a network split or on a host that lost power.
struct Relay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn to(target: u16) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            while f.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while f.load(Ordering::Relaxed) {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        Relay { port, frozen }
    }

    fn freeze(&self) {
        self.frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_frozen_client_is_dropped_with_its_engine_stream_within_the_keepalive() {
    let a = Agent::start(&["--keepalive", "1s"]);
    let name = unique("frozen");
    a.launch(&name, "while true; do echo alive; sleep 0.1; done");
    let relay = Relay::to(a.port);
    let mut follower = dockwatch()
        .args(["remote", "--host", &format!("127.0.0.1:{}", relay.port)])
        .args(["logs", &name, "-f"])
        .env_remove("DOCKWATCH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(follower.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first, "alive\n");
    }
    let t0 = std::time::Instant::now();
    relay.freeze();
    // Ping after 1 s of quiet (the follower's lines keep the connection busy only until the
    // relay's buffers fill), unanswered for 1 s: dropped, with its engine stream.
    let freed = wait_until(Duration::from_secs(20), || {
        a.log()
            .contains("cancelled by the client; engine stream closed (0 open)")
    });
    let took = t0.elapsed();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        freed,
        "the frozen client still holds its stream:\n{}",
        a.log()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn follow_shows_new_lines_and_cancelling_frees_the_stream() {
    let a = Agent::start(&[]);
    let name = unique("ticks");
    a.launch(
        &name,
        "sleep 1; for i in $(seq 1 30); do echo tick $i; sleep 0.05; done",
    );
    // Started before the lines are written: they arrive while it runs, then it ends (exit 0)
    // when the container stops.
    let o = a.remote(&["logs", &name, "-f"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: String = (1..=30).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(stdout(&o), want);

    let long = unique("long");
    a.launch(&long, "while true; do echo alive; sleep 0.2; done");
    let mut followers: Vec<Child> = (0..5)
        .map(|_| {
            a.remote_cmd(&["logs", &long, "-f"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for f in &followers {
        signal(f, "INT");
    }
    for f in followers.drain(..) {
        let o = f.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
        assert!(stdout(&o).starts_with("alive\n"), "each follower got lines");
    }
    let freed = wait_until(Duration::from_secs(10), || {
        a.log()
            .contains("cancelled by the client; engine stream closed (0 open)")
    });
    assert!(
        freed,
        "the agent did not drop the engine streams:\n{}",
        a.log()
    );
}

#[test]
fn exec_round_trips_stdin_and_returns_the_exit_code() {
    let a = Agent::start(&[]);
    let name = unique("exec");
    a.launch(&name, "sleep 60");
    let mut child = a
        .remote_cmd(&[
            "exec",
            "-i",
            &name,
            "--",
            "bash",
            "-c",
            "read x; echo got $x; echo oops >&2; exit 3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "got hello\n");
    assert_eq!(stderr(&o), "oops\n");

    // All of stdin, binary, through `cat`.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut child = a
        .remote_cmd(&["exec", "-i", &name, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&d).unwrap());
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(o.status.success());
    assert!(
        o.stdout == data,
        "cat returned {} of {} bytes",
        o.stdout.len(),
        data.len()
    );

    // A TTY.
    let o = a.remote(&["exec", "-t", &name, "--", "bash", "-c", "tty; exit 0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("/dev/pts/"), "{}", stdout(&o));

    // Errors: a stopped container, a missing one.
    let o = a.remote(&["exec", "missing-container-xyz", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "Error: container 'missing-container-xyz' not found\n"
    );
    let audit = a.log();
    assert!(
        audit.contains("call=ExecContainer") && audit.contains("call=LaunchContainer"),
        "{audit}"
    );
}

#[test]
fn error_cases_are_one_line_with_an_exit_code() {
    let a = Agent::start(&[]);
    let name = unique("err");
    a.launch(&name, "echo hi");
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["logs", "no-such-container-xyz"],
            1,
            "Error: container 'no-such-container-xyz' not found\n",
        ),
        (
            &["logs", &name, "--tail", "-1"],
            2,
            "Error: --tail -1 is negative: give 0 (all) or a number of lines\n",
        ),
        (
            &["logs", &name, "--since", "yesterday"],
            2,
            "Error: --since: invalid time 'yesterday'",
        ),
        (
            &["logs", &name, "--no-stdout", "--no-stderr"],
            2,
            "Error: --no-stdout and --no-stderr together leave nothing to show\n",
        ),
        (
            &["stop", "no-such-container-xyz"],
            1,
            "Error: container 'no-such-container-xyz' not found\n",
        ),
    ];
    for (args, code, text) in cases {
        let o = a.remote(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with(text), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}");
    }
    // The agent checks too, for other clients: a negative tail straight over gRPC.
    let e = rt()
        .block_on(async {
            a.client()
                .await
                .get_logs(GetLogsRequest {
                    container: name.clone(),
                    tail: Some(-5),
                    ..Default::default()
                })
                .await
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nothing listening.
    let o = dockwatch()
        .args([
            "remote",
            "--host",
            &format!("127.0.0.1:{}", free_port()),
            "ps",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("Error: cannot reach the agent at 127.0.0.1:"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    // Stop and remove; ps no longer lists it.
    let o = a.remote(&["stop", &name, "--rm", "-t", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = a.remote(&["ps", "-a"]);
    assert!(!stdout(&o).contains(&name), "{}", stdout(&o));
}

#[test]
fn tokens_and_tls_are_enforced() {
    let dir = std::env::temp_dir().join(unique("dwtls"));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();

    // A certificate authority, a server certificate for 127.0.0.1/localhost, a client one.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dockwatch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_pem, client_key) = leaf(vec!["client".into()]);
    let w = |n: &str, c: &str| {
        let p = dir.join(n);
        std::fs::write(&p, c).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (ca_f, srv_c, srv_k) = (
        w("ca.pem", &ca.pem()),
        w("srv.pem", &server_pem),
        w("srv.key", &server_key),
    );
    let (cli_c, cli_k) = (w("cli.pem", &client_pem), w("cli.key", &client_key));

    // A token on loopback: none or a wrong one is refused.
    let a = Agent::start(&["--token-file", token.to_str().unwrap()]);
    let o = a.remote(&["ps"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("Error: the agent refused the credentials: no bearer token"),
        "{}",
        stderr(&o)
    );
    let o = a.remote(&["--token-file", wrong.to_str().unwrap(), "ps"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the bearer token is not valid"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("nope") && !a.log().contains("s3cret"));
    let o = a
        .remote_cmd(&["ps"])
        .env("DOCKWATCH_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    drop(a);

    // TLS + token, mutual TLS: the client needs the CA, the token and its certificate.
    let a = Agent::start(&[
        "--token-file",
        token.to_str().unwrap(),
        "--tls-cert",
        &srv_c,
        "--tls-key",
        &srv_k,
        "--tls-client-ca",
        &ca_f,
    ]);
    let tok = token.to_str().unwrap();
    let o = a.remote(&[
        "--token-file",
        tok,
        "--tls-ca",
        &ca_f,
        "--tls-cert",
        &cli_c,
        "--tls-key",
        &cli_k,
        "ps",
    ]);
    assert!(o.status.success(), "mutual TLS: {}", stderr(&o));
    // The audit names the client certificate by its SHA-256 fingerprint, as openssl prints it.
    let name = unique("audited");
    let o = a.remote(&[
        "--token-file",
        tok,
        "--tls-ca",
        &ca_f,
        "--tls-cert",
        &cli_c,
        "--tls-key",
        &cli_k,
        "launch",
        "--image",
        IMAGE,
        "--command",
        "true",
        "--name",
        &name,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let der = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(client_pem.as_bytes()).unwrap()
    };
    let fp: Vec<String> = {
        use sha2::Digest;
        sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    let want = format!("identity=bearer-token+client-cert:{}", fp.join(":"));
    assert!(a.log().contains(&want), "{want} not in {}", a.log());
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    let o = a.remote(&["--token-file", tok, "--tls-ca", &ca_f, "ps"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "no client certificate must be refused"
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        // Said by the alert when the client reads it, else by the closed connection.
        stderr(&o).contains("client certificate")
            && stderr(&o).contains("pass --tls-cert FILE --tls-key FILE"),
        "{}",
        stderr(&o)
    );
    // The CA, the certificate and the key from the environment, as the host and the token.
    let o = a
        .remote_cmd(&["--token-file", tok, "ps"])
        .env("DOCKWATCH_TLS_CA", &ca_f)
        .env("DOCKWATCH_TLS_CERT", &cli_c)
        .env("DOCKWATCH_TLS_KEY", &cli_k)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "TLS settings from the environment: {}",
        stderr(&o)
    );
    let o = a.remote(&["--token-file", tok, "ps"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "plain text to a TLS agent must fail"
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--tls-ca"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("source:") && !stderr(&o).contains("Custom {"),
        "a debug dump: {}",
        stderr(&o)
    );
    drop(a);

    // `openssl req -x509`'s certificate is a CA's: the agent warns at start, the client
    // says why it refuses it, in one line, never a debug dump.
    let self_key = rcgen::KeyPair::generate().unwrap();
    let mut self_params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    self_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let self_cert = self_params.self_signed(&self_key).unwrap();
    let (self_c, self_k) = (
        w("self.pem", &self_cert.pem()),
        w("self.key", &self_key.serialize_pem()),
    );
    let a = Agent::start(&["--tls-cert", &self_c, "--tls-key", &self_k]);
    assert!(a.log().contains("CA:TRUE"), "{}", a.log());
    let o = a.remote(&["--tls-ca", &self_c, "ps"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is a CA certificate"), "{err}");
    assert!(
        !err.contains("Other(") && !err.contains("CaUsedAsEndEntity"),
        "{err}"
    );
    drop(a);

    // Beyond loopback: refused without TLS and token, warned with --insecure.
    let o = dockwatch()
        .args(["agent", "--listen", &format!("0.0.0.0:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("exposes the Docker engine") && stderr(&o).contains("--insecure"),
        "{}",
        stderr(&o)
    );
    let port = free_port();
    let insecure = dockwatch()
        .args([
            "agent",
            "--insecure",
            "--listen",
            &format!("0.0.0.0:{port}"),
        ])
        .args(["--state-dir", dir.join("st").to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(20));
    signal(&insecure, "TERM");
    let o = insecure.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("WARNING") && stderr(&o).contains("root on this host"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_client_does_not_make_the_agent_buffer() {
    let a = Agent::start(&[]);
    let name = unique("flood");
    // About 150 MB of 1 KiB lines into the engine's log.
    a.launch(
        &name,
        "yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 150000",
    );
    a.wait_exited(&name);
    let rss_kib = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = rss_kib(a.child.id());
    rt().block_on(async {
        let mut c = a.client().await;
        let mut s = c
            .get_logs(GetLogsRequest {
                container: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Read one entry, then stall while the agent could read 150 MB.
        assert!(s.message().await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stalled = rss_kib(a.child.id());
        assert!(
            stalled < before + 48 * 1024,
            "agent RSS grew from {before} KiB to {stalled} KiB while the client did not read"
        );
        // Then everything arrives, complete.
        let mut entries = 1u64;
        loop {
            match s.message().await.unwrap().unwrap().msg.unwrap() {
                get_logs_response::Msg::Entry(_) => entries += 1,
                get_logs_response::Msg::Status(st) => {
                    assert_eq!(st.entries_sent, 150_000);
                    break;
                }
            }
        }
        assert_eq!(entries, 150_000);
    });
}

#[test]
fn health_reflection_and_shipping_to_cloudwatch() {
    let ep = moto_url();
    let a = Agent::start(&["--aws-endpoint-url", &ep, "--aws-region", REGION]);
    let group = unique("/dwagent");
    let name = unique("shipped");
    let label = format!("dockwatch.test={}", a.label);
    let o = a
        .remote_cmd(&[
            "launch",
            "--image",
            IMAGE,
            "--name",
            &name,
            "--label",
            &label,
            "--command",
            "for i in $(seq 1 500); do echo line $i; done; echo bad >&2",
            "--cloudwatch-group",
            &group,
            "--cloudwatch-stream",
            "s",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = a.remote(&["ps", "-a"]);
    assert!(stdout(&o).contains(&format!("{group}/s")), "{}", stdout(&o));
    let shipped = wait_until(Duration::from_secs(30), || {
        read_events(&ep, &group, "s").len() == 501
    });
    assert!(shipped, "{}", a.log());
    let msgs = messages(&ep, &group, "s");
    let lines: Vec<&String> = msgs.iter().filter(|m| m.starts_with("line ")).collect();
    let want: Vec<String> = (1..=500).map(|i| format!("line {i}")).collect();
    assert_eq!(
        lines,
        want.iter().collect::<Vec<_>>(),
        "stdout complete and in order"
    );
    assert_eq!(msgs.iter().filter(|m| *m == "bad").count(), 1);
    // The container is kept: its logs are still readable through the agent.
    a.wait_exited(&name);
    let o = a.remote(&["logs", &name, "--no-stdout"]);
    assert_eq!(stderr(&o), "bad\n");

    // Health and reflection answer.
    let url = format!("http://127.0.0.1:{}", a.port);
    rt().block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "dockwatch.agent.v1.Agent".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let refl_channel = ch.clone();
        let mut refl = ServerReflectionClient::new(ch);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut s = refl
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            s.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"dockwatch.agent.v1.Agent".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
        // v1alpha, for older grpcurl.
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest as AlphaRequest,
            server_reflection_request::MessageRequest as AlphaMessage,
            server_reflection_response::MessageResponse as AlphaResponse,
        };
        let mut alpha = Alpha::new(refl_channel);
        let req = AlphaRequest {
            host: String::new(),
            message_request: Some(AlphaMessage::ListServices(String::new())),
        };
        let mut s = alpha
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(AlphaResponse::ListServicesResponse(list)) =
            s.message().await.unwrap().unwrap().message_response
        else {
            panic!("no v1alpha service list")
        };
        assert!(list.service.iter().any(|s| s.name == "dockwatch.agent.v1.Agent"));
    });
}

/// `remote logs C | head -1` and `remote ps | true`: a closed stdout is a quiet, normal end
/// (exit 0, no message), as with docker; never a panic.
#[test]
fn remote_output_into_a_closed_pipe_ends_quietly() {
    let a = Agent::start(&[]);
    let name = unique("pipe");
    a.launch(&name, "seq 1 200000");
    a.wait_exited(&name);
    for args in [vec!["logs", name.as_str()], vec!["ps", "-a"]] {
        let mut child = a
            .remote_cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read nothing: close the pipe at once.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// SIGTERM to the agent while three clients follow a log: the agent exits within 2 s, each
/// follower ends with the agent's status instead of hanging; the container keeps running.
#[test]
fn sigterm_with_three_followers_ends_the_agent_promptly() {
    let mut a = Agent::start(&[]);
    let long = unique("followed");
    a.launch(&long, "while true; do echo alive; sleep 0.2; done");
    let followers: Vec<Child> = (0..3)
        .map(|_| {
            a.remote_cmd(&["logs", &long, "-f"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    signal(&a.child, "TERM");
    let status = a.child.wait().unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}:\n{}", a.log());
    assert_eq!(status.code(), Some(0), "{}", a.log());
    for f in followers {
        let o = f.wait_with_output().unwrap();
        assert!(stdout(&o).starts_with("alive\n"), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("the agent is stopping"),
            "{:?}: {}",
            o.status,
            stderr(&o)
        );
    }
    let running = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &long])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true");
}

/// `remote logs -t` prints what `docker logs -t` prints, byte for byte (nine-digit
/// fractions), on 10,000 lines of both streams.
#[test]
fn remote_logs_with_timestamps_equal_docker_logs() {
    let a = Agent::start(&[]);
    let name = unique("stamped");
    a.launch(
        &name,
        "for i in $(seq 1 5000); do echo out $i; echo err $i >&2; done",
    );
    a.wait_exited(&name);
    let ours = a.remote(&["logs", &name, "-t"]);
    assert!(ours.status.success(), "{}", stderr(&ours));
    let docker = std::process::Command::new("docker")
        .args(["logs", "-t", &name])
        .output()
        .unwrap();
    assert_eq!(stdout(&ours).lines().count(), 5000);
    assert!(
        ours.stdout == docker.stdout,
        "stdout differs from docker logs -t"
    );
    assert!(
        ours.stderr == docker.stderr,
        "stderr differs from docker logs -t"
    );
    // `--tail all`, as docker takes it.
    let all = a.remote(&["logs", &name, "-t", "--tail", "all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert!(all.stdout == docker.stdout, "--tail all is everything");
    // `--since` a line's own nanosecond timestamp starts at that line (docker's precision).
    let text = String::from_utf8_lossy(&docker.stdout).to_string();
    for n in [1, 1234, 4999] {
        let line = text.lines().nth(n).unwrap();
        let ts = line.split(' ').next().unwrap();
        let o = a.remote(&["logs", &name, "-t", "--no-stderr", "--since", ts]);
        assert!(o.status.success(), "{}", stderr(&o));
        let got = stdout(&o);
        let first = got.lines().next().unwrap_or("");
        // Two lines may share a nanosecond only in theory; the first printed carries ts.
        assert!(
            first.starts_with(ts),
            "--since {ts}: first line {first:?}, want {line:?}"
        );
        assert_eq!(got.lines().count(), 5000 - n, "--since {ts}");
    }
}
