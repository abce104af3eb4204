//! Bad input and unreachable dependencies: one clear line, a documented exit code, no
//! container left behind, no secret printed.

use crate::common::*;

/// The error line: exactly one line starting with `dockwatch: error:` (the secret warning
/// may precede it).
fn error_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("dockwatch: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    errors[0].to_string()
}

#[test]
fn invalid_group_name() {
    let mut job = Job::named("http://127.0.0.1:1", IMAGE, "echo x", "bad group!", "s");
    let out = job.output();
    assert_eq!(out.status.code(), Some(2));
    let line = error_line(&out);
    assert!(
        line.contains("invalid log group name \"bad group!\""),
        "{line}"
    );
    assert!(line.contains("A-Z a-z 0-9"), "{line}");
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn invalid_stream_name() {
    let mut job = Job::named("http://127.0.0.1:1", IMAGE, "echo x", "g", "a:b");
    let out = job.output();
    assert_eq!(out.status.code(), Some(2));
    assert!(error_line(&out).contains("invalid log stream name \"a:b\""));
}

#[test]
fn missing_flag_is_a_usage_error() {
    let out = dockwatch()
        .args(["--docker-image", IMAGE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = error_line(&out);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(line.contains("--bash-command"), "{line}");
}

/// A mistyped flag: clap's suggestion, in dockwatch's one-line form; on a subcommand, its
/// `--help`. Help itself still goes to stdout with exit 0, also into a closed pipe.
#[test]
fn mistyped_flag_is_one_line_with_the_suggestion() {
    let out = dockwatch().args(["--docker-imag", IMAGE]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("'--docker-imag'") && line.contains("'--docker-image'"),
        "{line}"
    );
    let out = dockwatch()
        .args(["tail", "--sinc", "1h", "g"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        error_line(&out).ends_with("see 'dockwatch tail --help'"),
        "{}",
        stderr(&out)
    );
    let help = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --help | head -1",
            env!("CARGO_BIN_EXE_dockwatch")
        ))
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(stderr(&help).is_empty(), "{}", stderr(&help));
}

#[test]
fn no_region_anywhere() {
    let out = dockwatch_without_aws_config()
        .args(["--docker-image", IMAGE, "--bash-command", "true"])
        .args([
            "--aws-cloudwatch-group",
            "g",
            "--aws-cloudwatch-stream",
            "s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("no AWS region: pass --aws-region"));
}

#[test]
fn endpoint_unreachable() {
    let port = free_port(); // nothing listens there
    let mut job = Job::new(&format!("http://127.0.0.1:{port}"), "echo x");
    let out = job.output();
    assert_eq!(out.status.code(), Some(125));
    let line = error_line(&out);
    assert!(
        line.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{line}"
    );
    assert!(containers_with_label(&job.label).is_empty());
}

#[test]
fn docker_unreachable() {
    let mut job = Job::new(&moto_url(), "echo x");
    job.cmd
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let out = job.output();
    assert_eq!(out.status.code(), Some(125));
    let line = error_line(&out);
    assert!(
        line.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{line}"
    );
    assert!(line.contains("start dockerd or set DOCKER_HOST"), "{line}");
}

#[test]
fn image_missing_and_not_pullable() {
    let url = moto_url();
    // --pull never: not present locally.
    let mut job = Job::with_image(&url, "dockwatch-no-such-image:v0", "echo x");
    job.arg("--pull").arg("never");
    let out = job.output();
    assert_eq!(out.status.code(), Some(125));
    let line = error_line(&out);
    assert!(
        line.contains("image \"dockwatch-no-such-image:v0\" is not available"),
        "{line}"
    );
    assert!(!group_exists(&url, &job.group), "group created");
    // Pull from a registry that does not answer.
    let port = free_port();
    let image = format!("127.0.0.1:{port}/nothing:here");
    let mut job = Job::with_image(&url, &image, "echo x");
    let out = job.output();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(error_line(&out).contains(&format!("image {image:?} is not available")));
    assert!(containers_with_label(&job.label).is_empty());
}

/// Whether the group exists (a run that could not start must not have created it).
fn group_exists(url: &str, group: &str) -> bool {
    log_group(url, group).is_some()
}

#[test]
fn image_without_bash() {
    let url = moto_url();
    // Under the engine's init (the default) the shell is looked up before the start; without
    // it the start fails. Both: the same line and code, nothing created in CloudWatch.
    for extra in [None, Some("--no-init"), Some("--shell=/bin/bash")] {
        let mut job = Job::with_image(&url, NOBASH_IMAGE, "echo x");
        if let Some(a) = extra {
            job.arg(a);
        }
        let out = job.output();
        assert_eq!(out.status.code(), Some(127), "{extra:?}: {}", stderr(&out));
        let line = error_line(&out);
        assert!(line.contains("executable"), "{line}");
        assert!(line.contains("--shell"), "{line}");
        assert!(
            !stderr(&out).contains("tini"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(
            containers_with_label(&job.label).is_empty(),
            "container left behind"
        );
        assert!(!group_exists(&url, &job.group), "{extra:?}: group created");
    }
}

#[test]
fn a_shell_found_by_path_runs_under_init() {
    let url = moto_url();
    // sh is in /bin of the no-bash image; `PATH` from -e is the one searched.
    let mut job = Job::with_image(&url, NOBASH_IMAGE, "echo pid $$");
    job.args(["--shell", "sh", "-e", "PATH=/nowhere:/bin"]);
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Under the init the shell is not PID 1.
    let got = messages(&url, &job.group, &job.stream);
    assert_eq!(got.len(), 1);
    assert_ne!(got[0], "pid 1", "{got:?}");
    let mut job = Job::with_image(&url, NOBASH_IMAGE, "echo pid $$");
    job.args(["--shell", "sh", "--no-init"]);
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), ["pid 1"]);
}

#[test]
fn another_shell_with_shell_flag() {
    let url = moto_url();
    let mut job = Job::with_image(&url, NOBASH_IMAGE, "echo from-sh");
    job.arg("--shell").arg("sh");
    let out = job.output();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(messages(&url, &job.group, &job.stream), ["from-sh"]);
}

#[test]
fn no_credentials_anywhere() {
    let out = dockwatch_without_aws_config()
        .args([
            "--docker-image",
            IMAGE,
            "--bash-command",
            "true",
            "--aws-region",
            REGION,
        ])
        .args([
            "--aws-cloudwatch-group",
            "g",
            "--aws-cloudwatch-stream",
            "s",
        ])
        .args(["--aws-endpoint-url", &moto_url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("no AWS credentials found; pass --aws-access-key-id"),
        "{line}"
    );
}

/// A misspelt `--aws-profile` says which profile is missing (not "no AWS region"), for the
/// main job and for `tail`, before anything runs.
#[test]
fn a_misspelt_profile_is_named() {
    let home = std::env::temp_dir().join(unique("home"));
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/config"),
        "[profile dev]\nregion = eu-west-1\n",
    )
    .unwrap();
    let run = dockwatch_without_aws_config()
        .env("HOME", &home)
        .args(["--docker-image", IMAGE, "--bash-command", "true"])
        .args([
            "--aws-cloudwatch-group",
            "g",
            "--aws-cloudwatch-stream",
            "s",
        ])
        .args(["--aws-profile", "devv"])
        .output()
        .unwrap();
    let tail = dockwatch_without_aws_config()
        .env("HOME", &home)
        .args(["tail", "g", "--aws-profile", "devv"])
        .output()
        .unwrap();
    for out in [run, tail] {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            error_line(&out).contains("AWS profile 'devv' not found"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "{}",
            stderr(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}
