//! `docker run`'s options, spelt as docker spells them, reach the container with docker's
//! meaning: checked inside the container (what the command sees) and with `docker inspect`.

use std::io::Write;
use std::process::Stdio;

use crate::common::*;

/// `docker inspect` of one container, as JSON.
fn inspect(id: &str) -> serde_json::Value {
    let out = std::process::Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn docker_run_options_reach_the_container() {
    let url = moto_url();
    let dir = std::env::temp_dir().join(unique("dw-run-opts"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x"), "from the volume\n").unwrap();
    let env_file = dir.join("app.env");
    std::fs::write(&env_file, "# settings\nFILE_A=1\nFROM_HOST\n").unwrap();
    let port = free_port().to_string();
    let mut job = Job::new(
        &url,
        "pwd; id -u; id -g; echo \"a=$FILE_A host=$FROM_HOST e=$E set=${UNSET_HERE-none}\"; cat /data/x",
    );
    job.cmd
        .env("FROM_HOST", "passed through")
        .env_remove("UNSET_HERE");
    job.args([
        "-w",
        "/tmp",
        "-u",
        "1234:5678",
        "-e",
        "E=2",
        "-e",
        "UNSET_HERE",
    ]);
    job.args(["--env-file", env_file.to_str().unwrap()]);
    job.args(["-v", &format!("{}:/data:ro", dir.display())]);
    job.args(["-m", "64m", "--cpus", "0.5", "--network", "bridge"]);
    job.args(["-p", &format!("127.0.0.1:{port}:80"), "--keep-container"]);
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        messages(&url, &job.group, &job.stream),
        [
            "/tmp",
            "1234",
            "5678",
            "a=1 host=passed through e=2 set=none",
            "from the volume"
        ]
    );
    let ids = containers_with_label(&job.label);
    assert_eq!(ids.len(), 1);
    let c = inspect(&ids[0]);
    cleanup(&job.label);
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["NetworkMode"], "bridge");
    assert_eq!(host["Init"], true);
    assert_eq!(host["PortBindings"]["80/tcp"][0]["HostPort"], port.as_str());
    assert_eq!(host["PortBindings"]["80/tcp"][0]["HostIp"], "127.0.0.1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn interactive_forwards_standard_input_to_its_end() {
    let url = moto_url();
    let mut job = Job::new(
        &url,
        "while read -r l; do echo \"got $l\"; done; echo end of input",
    );
    job.arg("-i");
    job.cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = job.cmd.spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 1..=1000 {
            writeln!(stdin, "line {i}").unwrap();
        }
    } // closed: the command's input ends
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut want: Vec<String> = (1..=1000).map(|i| format!("got line {i}")).collect();
    want.push("end of input".into());
    assert_eq!(messages(&url, &job.group, &job.stream), want);

    // Without -i the command's input is empty at once.
    let mut job = Job::new(&url, "cat; echo no input");
    job.cmd.stdin(Stdio::piped());
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), ["no input"]);
}

#[test]
fn bad_docker_run_options_are_one_line_each() {
    let url = moto_url();
    for (args, says) in [
        (&["-m", "lots"][..], "invalid --memory value \"lots\""),
        (&["--cpus=-1"][..], "invalid --cpus value \"-1\""),
        (
            &["-p", "80:http"][..],
            "invalid --publish value \"80:http\"",
        ),
        (
            &["-w", "relative"][..],
            "invalid --workdir value \"relative\"",
        ),
        (
            &["--env-file", "/nonexistent/app.env"][..],
            "cannot read --env-file /nonexistent/app.env",
        ),
        (
            &["-v", "relative:/x"][..],
            "invalid --volume \"relative:/x\"",
        ),
    ] {
        let mut job = Job::new(&url, "echo never");
        for a in args {
            job.arg(a);
        }
        let out = job.output();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(containers_with_label(&job.label).is_empty());
    }
    // An engine-side refusal (no such network) is one line too, and nothing is left.
    let mut job = Job::new(&url, "echo never");
    job.args(["--network", "dockwatch-no-such-network"]);
    let out = job.output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("dockwatch-no-such-network"), "{err}");
    assert!(containers_with_label(&job.label).is_empty());
}
