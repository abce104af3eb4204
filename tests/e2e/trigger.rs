//! `dockwatch on-upload` and `--on ecs`: the real binary, the real engine, moto as S3, SQS,
//! ECS and CloudWatch Logs.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::*;
use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};

/// A client of moto for one AWS service crate, with the test credentials and region.
macro_rules! moto_client {
    ($krate:ident, $ep:expr) => {
        $krate::Client::from_conf(
            $krate::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .credentials_provider(Credentials::new("AKIDTESTKEY", "x", None, None, "test"))
                .endpoint_url($ep)
                .build(),
        )
    };
}

fn s3(ep: &str) -> aws_sdk_s3::Client {
    // Buckets by path: moto is one host.
    let conf = moto_client!(aws_sdk_s3, ep)
        .config()
        .to_builder()
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn sqs(ep: &str) -> aws_sdk_sqs::Client {
    moto_client!(aws_sdk_sqs, ep)
}

fn ecs(ep: &str) -> aws_sdk_ecs::Client {
    moto_client!(aws_sdk_ecs, ep)
}

fn put(ep: &str, bucket: &str, key: &str, body: &str) {
    rt().block_on(async {
        s3(ep)
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    });
}

fn get(ep: &str, bucket: &str, key: &str) -> Option<String> {
    rt().block_on(async {
        let o = s3(ep)
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        let b = o.body.collect().await.ok()?.into_bytes();
        Some(String::from_utf8_lossy(&b).into_owned())
    })
}

/// A running `dockwatch on-upload`, its stderr in a file.
struct OnUpload {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
    label: String,
}

impl OnUpload {
    fn start(ep: &str, bucket: &str, command: &str, extra: &[&str]) -> OnUpload {
        Self::start_from(ep, bucket, command, &["--setup"], extra)
    }

    /// `on-upload` with the test's image, group, state directory under `dir`, label, and
    /// stderr into `log`; the caller adds the prefixes and the queue.
    fn command(
        ep: &str,
        bucket: &str,
        command: &str,
        dir: &std::path::Path,
        label: &str,
        log: &std::path::Path,
    ) -> std::process::Command {
        let mut c = dockwatch_with_env(ep);
        c.args(["on-upload", "--bucket", bucket, "--wait", "1s"])
            .args(["--docker-image", IMAGE, "--bash-command", command])
            .args(["--aws-cloudwatch-group", &format!("/dwup/{bucket}")])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .args(["--label", &format!("dockwatch.test={label}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        c
    }

    /// With `source`: `--setup`, or `--queue-url URL`.
    fn start_from(
        ep: &str,
        bucket: &str,
        command: &str,
        source: &[&str],
        extra: &[&str],
    ) -> OnUpload {
        let dir = std::env::temp_dir().join(unique("dwup"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stderr.log");
        let label = unique("up");
        let child = Self::command(ep, bucket, command, &dir, &label, &log)
            .args(["--prefix", "input/", "--output-prefix", "output/"])
            .args(source)
            .args(extra)
            .spawn()
            .unwrap();
        let up = OnUpload {
            child,
            log,
            dir,
            label,
        };
        assert!(
            wait_until(Duration::from_secs(30), || up
                .stderr()
                .contains("watching s3://")),
            "{}",
            up.stderr()
        );
        up
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> (Option<i32>, String) {
        signal(&self.child, "TERM");
        let code = self.child.wait().unwrap().code();
        (code, self.stderr())
    }
}

impl Drop for OnUpload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup(&self.label);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bucket_name(p: &str) -> String {
    unique(p).to_lowercase()
}

#[test]
fn each_upload_runs_one_container_and_a_repeated_notification_does_not_rerun() {
    let ep = moto_url();
    let bucket = bucket_name("dwup");
    let cmd = r#"tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/upper.txt"; mkdir "$OUTPUT_DIR/sub"; echo ok > "$OUTPUT_DIR/sub/done"; echo "processed $S3_KEY"; echo "size $(wc -c < "$INPUT_FILE")" >&2"#;
    let up = OnUpload::start(&ep, &bucket, cmd, &["--concurrency", "2"]);
    let files = [
        ("input/one.txt", "alpha\n"),
        ("input/two words.txt", "beta\n"),
        ("input/deep/three.txt", "gamma\n"),
    ];
    for (k, body) in files {
        put(&ep, &bucket, k, body);
    }
    put(
        &ep,
        &bucket,
        "elsewhere/ignored.txt",
        "not under the prefix\n",
    );
    let done = wait_until(Duration::from_secs(60), || {
        files.iter().all(|(k, _)| {
            get(
                &ep,
                &bucket,
                &format!("output/{}/sub/done", &k["input/".len()..]),
            )
            .is_some()
        })
    });
    assert!(done, "{}", up.stderr());
    for (k, body) in files {
        let rel = &k["input/".len()..];
        assert_eq!(
            get(&ep, &bucket, &format!("output/{rel}/upper.txt")).unwrap(),
            body.to_uppercase()
        );
        // Its logs, in a stream named after the key.
        let msgs = messages(&ep, &format!("/dwup/{bucket}"), k);
        assert!(msgs.contains(&format!("processed {k}")), "{k}: {msgs:?}");
        assert!(
            msgs.contains(&format!("size {}", body.len())),
            "{k}: {msgs:?}"
        );
    }

    // The same notification again (SQS delivers at least once): no second run.
    let etag = rt().block_on(async {
        s3(&ep)
            .head_object()
            .bucket(&bucket)
            .key("input/one.txt")
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .trim_matches('"')
            .to_string()
    });
    let queue = queue_of(&ep, &bucket);
    let body = serde_json::json!({"Records": [{
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": "input/one.txt", "eTag": etag, "size": 6}}
    }]})
    .to_string();
    rt().block_on(async {
        sqs(&ep)
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    });
    assert!(
        wait_until(Duration::from_secs(30), || up
            .stderr()
            .contains("was already processed: skipped")),
        "{}",
        up.stderr()
    );
    let runs = messages(&ep, &format!("/dwup/{bucket}"), "input/one.txt")
        .iter()
        .filter(|m| m.starts_with("processed "))
        .count();
    assert_eq!(runs, 1, "one run per object");
    let label = up.label.clone();
    let (code, err) = up.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("elsewhere/ignored.txt: starting"), "{err}");
    assert!(
        containers_with_label(&label).is_empty(),
        "containers left behind"
    );
}

#[test]
fn a_failing_task_is_retried_then_left_to_the_dead_letter_queue() {
    let ep = moto_url();
    let bucket = bucket_name("dwfail");
    let port = free_port();
    let up = OnUpload::start(
        &ep,
        &bucket,
        "echo trying; exit 3",
        &[
            "--max-attempts",
            "2",
            "--visibility-timeout",
            "2s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    put(&ep, &bucket, "input/bad.txt", "x\n");
    let dlq = dlq_of(&ep, &bucket);
    let in_dlq = wait_until(Duration::from_secs(60), || {
        rt().block_on(async {
            let r = sqs(&ep)
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await
                .unwrap();
            r.attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                })
                .is_some_and(|n| n == "1")
        })
    });
    let metrics = http_get(port, "/metrics");
    let (code, err) = up.stop();
    assert!(
        metrics.contains("dockwatch_on_upload_dead_lettered_total 1"),
        "{metrics}"
    );
    assert!(
        in_dlq,
        "the message did not reach the dead-letter queue:\n{err}"
    );
    assert_eq!(code, Some(0));
    assert!(
        err.contains("s3://")
            && err.contains(
                "input/bad.txt: failed (attempt 1 of 2): the container exited with code 3"
            ),
        "{err}"
    );
    assert!(err.contains("failed (attempt 2 of 2)"), "{err}");
    assert!(!err.contains("attempt 3"), "{err}");
    assert_eq!(
        err.matches("giving up on s3://").count(),
        1,
        "one line for the dead letter:\n{err}"
    );
    assert!(
        err.contains(
            "input/bad.txt after 2 attempts; the message is left for the queue's dead-letter policy"
        ),
        "{err}"
    );
    assert!(get(&ep, &bucket, "output/bad.txt/").is_none());
}

/// A default subnet of moto's EC2 (ECS checks the subnets it is given).
fn subnet(ep: &str) -> String {
    let out = std::process::Command::new(root().join(".dev/venv/bin/python"))
        .args([
            "-c",
            &format!(
                "import boto3; print(boto3.client('ec2', endpoint_url='{ep}', region_name='{REGION}', aws_access_key_id='t', aws_secret_access_key='t').describe_subnets()['Subnets'][0]['SubnetId'])"
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// moto advances a task's state on every DescribeTasks; keep tasks RUNNING until stopped, as
/// a real long task would be.
fn hold_ecs_tasks(ep: &str) {
    let body =
        r#"{"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}"#;
    let addr = ep.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "POST /moto-api/state-manager/set-transition HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 20"), "{out}");
}

fn dockwatch_tasks(ep: &str, cluster: &str) -> Vec<aws_sdk_ecs::types::Task> {
    rt().block_on(async {
        let c = ecs(ep);
        let mut arns = Vec::new();
        for status in [
            aws_sdk_ecs::types::DesiredStatus::Running,
            aws_sdk_ecs::types::DesiredStatus::Stopped,
        ] {
            let l = c
                .list_tasks()
                .cluster(cluster)
                .desired_status(status)
                .send()
                .await
                .unwrap();
            arns.extend(l.task_arns().iter().cloned());
        }
        if arns.is_empty() {
            return Vec::new();
        }
        c.describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .unwrap()
            .tasks()
            .to_vec()
    })
}

#[test]
fn on_ecs_registers_runs_follows_and_stops_the_task() {
    let ep = moto_url();
    hold_ecs_tasks(&ep);
    let cluster = unique("dwc");
    rt().block_on(async {
        ecs(&ep)
            .create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap()
    });
    let sub = subnet(&ep);
    let group = unique("/dwecs");
    let role = "arn:aws:iam::123456789012:role/ecs-exec";
    // `dockwatch --on ecs` with the given cluster and subnet, and more flags.
    let on_ecs = |cluster: &str, subnet: &str, extra: &[&str]| {
        let mut c = dockwatch_with_env(&ep);
        c.args([
            "--docker-image",
            "busybox:1.36",
            "--bash-command",
            "echo from fargate",
        ])
        .args([
            "--aws-cloudwatch-group",
            &group,
            "--aws-cloudwatch-stream",
            "job",
        ])
        .args([
            "--on",
            "ecs",
            "--ecs-cluster",
            cluster,
            "--ecs-subnets",
            subnet,
        ])
        .args(extra);
        c
    };
    let run = |extra: &[&str]| on_ecs(&cluster, &sub, extra);

    // Errors first: each missing or wrong option says which.
    let cases: [(&str, &str, &[&str], i32, &str); 3] = [
        (&cluster, &sub, &[], 2, "--ecs-execution-role"),
        (
            "no-such-cluster",
            &sub,
            &["--ecs-execution-role", role],
            125,
            "ECS cluster 'no-such-cluster' not found",
        ),
        (
            &cluster,
            "subnet-nope",
            &["--ecs-execution-role", role],
            125,
            "check --ecs-subnets",
        ),
    ];
    for (cl, subnet, extra, code, text) in cases {
        let o = on_ecs(cl, subnet, extra).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains(text), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }

    // A run: the task definition, the task and its overrides as ECS sees them.
    let child = run(&[
        "--ecs-execution-role",
        role,
        "--ecs-cpu",
        "512",
        "--ecs-memory",
        "1024",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || !dockwatch_tasks(
        &ep, &cluster
    )
    .is_empty()));
    let task = dockwatch_tasks(&ep, &cluster).remove(0);
    assert!(
        task.started_by()
            .is_some_and(|s| s.starts_with("dockwatch-")),
        "{:?}",
        task.started_by()
    );
    assert_eq!(
        task.launch_type(),
        Some(&aws_sdk_ecs::types::LaunchType::Fargate)
    );
    let over = &task.overrides().unwrap().container_overrides()[0];
    assert_eq!(
        (over.name(), over.command()),
        (Some("main"), &["echo from fargate".to_string()][..])
    );
    let td = rt().block_on(async {
        ecs(&ep)
            .describe_task_definition()
            .task_definition(task.task_definition_arn().unwrap())
            .send()
            .await
            .unwrap()
    });
    let td = td.task_definition().unwrap();
    assert_eq!(td.family(), Some("dockwatch-busybox-1-36"));
    assert_eq!(
        (td.cpu(), td.memory(), td.execution_role_arn()),
        (Some("512"), Some("1024"), Some(role))
    );
    let cd = &td.container_definitions()[0];
    assert_eq!(cd.entry_point(), ["bash".to_string(), "-c".to_string()]);
    let opts = cd.log_configuration().unwrap().options().unwrap();
    assert_eq!(opts.get("awslogs-group"), Some(&group));
    assert_eq!(opts.get("awslogs-stream-prefix"), Some(&"job".to_string()));
    // The task's log lines (written here, as the awslogs driver would) reach the terminal.
    let id = task
        .task_arn()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let stream = format!("job/main/{id}");
    rt().block_on(async {
        let _ = client(&ep)
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await;
    });
    put_one(&ep, &group, &stream, now_ms(), "hello from the task");
    std::thread::sleep(Duration::from_secs(3));
    // The task ends (moto runs nothing: stopped here); dockwatch exits with its code, 0.
    rt().block_on(async {
        ecs(&ep)
            .stop_task()
            .cluster(&cluster)
            .task(task.task_arn().unwrap())
            .send()
            .await
            .unwrap();
    });
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the task\n");

    // Reused task definition; Ctrl+C stops the task.
    let child = run(&[
        "--ecs-execution-role",
        role,
        "--ecs-cpu",
        "512",
        "--ecs-memory",
        "1024",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || dockwatch_tasks(
        &ep, &cluster
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let tasks = dockwatch_tasks(&ep, &cluster);
    assert!(tasks.iter().all(|t| t.last_status() == Some("STOPPED")));
    assert!(
        tasks
            .iter()
            .any(|t| t.stopped_reason() == Some("dockwatch: interrupted"))
    );
    assert!(
        tasks
            .iter()
            .all(|t| t.task_definition_arn() == task.task_definition_arn()),
        "the definition is reused"
    );
}

#[test]
fn on_upload_on_ecs_passes_the_object_key() {
    let ep = moto_url();
    hold_ecs_tasks(&ep);
    let cluster = unique("dwcu");
    rt().block_on(async {
        ecs(&ep)
            .create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap()
    });
    let sub = subnet(&ep);
    let bucket = bucket_name("dwecsup");
    let up = OnUpload::start(
        &ep,
        &bucket,
        "aws s3 cp s3://$S3_BUCKET/$S3_KEY /tmp/in",
        &[
            "--on",
            "ecs",
            "--ecs-cluster",
            &cluster,
            "--ecs-subnets",
            &sub,
            "--ecs-execution-role",
            "arn:aws:iam::123456789012:role/x",
        ],
    );
    put(&ep, &bucket, "input/data.csv", "a,b\n");
    assert!(
        wait_until(Duration::from_secs(30), || !dockwatch_tasks(&ep, &cluster)
            .is_empty()),
        "{}",
        up.stderr()
    );
    // The same notification twice more while the task runs: still one task.
    let queue = queue_of(&ep, &bucket);
    let body = notification(
        &bucket,
        "input/data.csv",
        &etag_of(&ep, &bucket, "input/data.csv"),
    );
    send(&ep, &queue, &body);
    send(&ep, &queue, &body);
    assert!(
        wait_until(Duration::from_secs(20), || up
            .stderr()
            .contains("input/data.csv is being processed by another run")),
        "{}",
        up.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        dockwatch_tasks(&ep, &cluster).len(),
        1,
        "one task per object"
    );
    assert!(
        up.stderr()
            .contains(&format!("for s3://{bucket}/input/data.csv on {cluster}")),
        "the task's log stream is said with its object: {}",
        up.stderr()
    );
    let task = dockwatch_tasks(&ep, &cluster).remove(0);
    let env: Vec<(String, String)> = task.overrides().unwrap().container_overrides()[0]
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap().to_string(),
                kv.value().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        env.contains(&("S3_KEY".into(), "input/data.csv".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("S3_BUCKET".into(), bucket.clone())),
        "{env:?}"
    );
    assert!(
        env.contains(&("OUTPUT_S3_PREFIX".into(), "output/data.csv/".into())),
        "{env:?}"
    );
    rt().block_on(async {
        ecs(&ep)
            .stop_task()
            .cluster(&cluster)
            .task(task.task_arn().unwrap())
            .send()
            .await
            .unwrap();
    });
    assert!(
        wait_until(Duration::from_secs(30), || up
            .stderr()
            .contains("input/data.csv: done")),
        "{}",
        up.stderr()
    );
    let (code, _) = up.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_stop_signal_lets_tasks_finish_within_the_grace_then_releases_their_messages() {
    let ep = moto_url();
    let bucket = bucket_name("dwstop");
    let up = OnUpload::start(&ep, &bucket, "echo started; sleep 60", &["--grace", "1s"]);
    put(&ep, &bucket, "input/slow.txt", "x\n");
    assert!(
        wait_until(Duration::from_secs(30), || up
            .stderr()
            .contains("input/slow.txt: starting")),
        "{}",
        up.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    let label = up.label.clone();
    let started = std::time::Instant::now();
    let (code, err) = up.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("waiting up to 1s"), "{err}");
    assert!(err.contains("stopping the running containers"), "{err}");
    assert!(
        containers_with_label(&label).is_empty(),
        "containers left behind"
    );
    // The unfinished message is visible again at once, for the next worker.
    let url = queue_of(&ep, &bucket);
    let got = rt().block_on(async {
        sqs(&ep)
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap()
            .messages()
            .len()
    });
    assert_eq!(
        got, 1,
        "the message of the stopped task is back in the queue"
    );
}

fn create_bucket(ep: &str, bucket: &str) {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    rt().block_on(async {
        s3(ep)
            .create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(REGION))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
}

/// The queue `--setup` made for `bucket`, and its dead-letter queue.
fn queue_of(ep: &str, bucket: &str) -> String {
    queue_named(ep, &format!("dockwatch-{bucket}-uploads"))
}

fn dlq_of(ep: &str, bucket: &str) -> String {
    queue_named(ep, &format!("dockwatch-{bucket}-uploads-dlq"))
}

fn queue_named(ep: &str, name: &str) -> String {
    rt().block_on(async {
        sqs(ep)
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    })
}

fn etag_of(ep: &str, bucket: &str, key: &str) -> String {
    rt().block_on(async {
        s3(ep)
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap()
            .trim_matches('"')
            .to_string()
    })
}

/// S3's notification body for one upload.
fn notification(bucket: &str, key: &str, etag: &str) -> String {
    serde_json::json!({"Records": [{
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 1}}
    }]})
    .to_string()
}

fn send(ep: &str, queue: &str, body: &str) {
    rt().block_on(async {
        sqs(ep)
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    });
}

/// Messages in the queue, visible and in flight.
fn queued(ep: &str, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    rt().block_on(async {
        let r = sqs(ep)
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = r.attributes().unwrap();
        let n = |k: &A| a.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(&A::ApproximateNumberOfMessages) + n(&A::ApproximateNumberOfMessagesNotVisible)
    })
}

/// How many runs of `key` a log shows.
fn starts(log: &str, key: &str) -> usize {
    log.matches(&format!("{key}: starting")).count()
}

/// A copy of an upload's notification delivered while its first run is still going (S3
/// delivers at least once): the object runs once, its output is right, both messages end.
#[test]
fn a_duplicate_notification_while_the_object_runs_does_not_run_it_again() {
    let ep = moto_url();
    let bucket = bucket_name("dwdup");
    let cmd = r#"sleep 2; cp "$INPUT_FILE" "$OUTPUT_DIR/copy"; echo "run $S3_KEY""#;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let up = OnUpload::start(
        &ep,
        &bucket,
        cmd,
        &["--concurrency", "3", "--metrics-addr", &addr],
    );
    let queue = queue_of(&ep, &bucket);
    for i in 0..3 {
        let key = format!("input/dup-{i}.txt");
        put(&ep, &bucket, &key, &format!("body {i}\n"));
        assert!(
            wait_until(Duration::from_secs(30), || starts(&up.stderr(), &key) == 1),
            "{}",
            up.stderr()
        );
        let body = notification(&bucket, &key, &etag_of(&ep, &bucket, &key));
        send(&ep, &queue, &body);
        send(&ep, &queue, &body);
        let out = format!("output/dup-{i}.txt/copy");
        assert!(
            wait_until(Duration::from_secs(30), || get(&ep, &bucket, &out)
                .is_some()
                && up.stderr().matches(&format!("{key} (")).count() >= 2),
            "{}",
            up.stderr()
        );
        assert_eq!(get(&ep, &bucket, &out).unwrap(), format!("body {i}\n"));
        let log = up.stderr();
        assert_eq!(starts(&log, &key), 1, "one run of {key}:\n{log}");
        assert!(
            log.contains(&format!("{key} is being processed by another run; waiting")),
            "{log}"
        );
        let runs = messages(&ep, &format!("/dwup/{bucket}"), &key)
            .iter()
            .filter(|m| m.starts_with("run "))
            .count();
        assert_eq!(runs, 1, "{key}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || queued(&ep, &queue) == 0),
        "every message acknowledged"
    );
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains("dockwatch_on_upload_tasks_total{outcome=\"succeeded\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dockwatch_on_upload_skipped_duplicates_total 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dockwatch_on_upload_tasks_running 0\n"),
        "{metrics}"
    );
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let (code, err) = up.stop();
    assert_eq!(code, Some(0), "{err}");
}

/// Two workers share one queue, with claims in S3: 20 uploads, each notification delivered
/// twice more, run exactly once each. Then a worker is SIGKILLed in the middle of a task: the
/// other takes the object over once the lease expires and runs it to success.
#[test]
fn two_workers_with_shared_claims_run_each_object_once_and_take_over_a_dead_ones() {
    let ep = moto_url();
    let bucket = bucket_name("dwtwo");
    let cmd = r#"if [ "$S3_KEY" = input/slow.txt ]; then sleep 8; fi; sleep 0.3; cp "$INPUT_FILE" "$OUTPUT_DIR/copy"; echo "run $S3_KEY""#;
    let claims = format!("s3://{bucket}/claims/");
    let extra = [
        "--claims",
        &claims,
        "--lease",
        "10s",
        "--visibility-timeout",
        "4s",
        "--concurrency",
        "4",
    ];
    let a = OnUpload::start(&ep, &bucket, cmd, &extra);
    let b = OnUpload::start(&ep, &bucket, cmd, &extra);
    let queue = queue_of(&ep, &bucket);
    let keys: Vec<String> = (0..20).map(|i| format!("input/f{i:02}.txt")).collect();
    for k in &keys {
        put(&ep, &bucket, k, &format!("{k}\n"));
        let body = notification(&bucket, k, &etag_of(&ep, &bucket, k));
        send(&ep, &queue, &body);
        send(&ep, &queue, &body);
    }
    let all_out = || {
        keys.iter().all(|k| {
            get(
                &ep,
                &bucket,
                &format!("output/{}/copy", &k["input/".len()..]),
            )
            .is_some()
        })
    };
    assert!(
        wait_until(Duration::from_secs(90), || all_out()
            && queued(&ep, &queue) == 0),
        "A:\n{}\nB:\n{}",
        a.stderr(),
        b.stderr()
    );
    let (la, lb) = (a.stderr(), b.stderr());
    for k in &keys {
        assert_eq!(
            starts(&la, k) + starts(&lb, k),
            1,
            "{k} ran once:\nA:\n{la}\nB:\n{lb}"
        );
    }
    // Both took messages (runs, or copies recognised as another's).
    let took = |l: &str| {
        starts(l, "input/f")
            + l.matches("was already processed").count()
            + l.matches("is being processed by another run").count()
    };
    assert!(
        took(&la) > 0 && took(&lb) > 0,
        "both worked:\nA:\n{la}\nB:\n{lb}"
    );

    // A worker dies mid-task; the other takes the object over after the lease.
    put(&ep, &bucket, "input/slow.txt", "slow\n");
    let (runner, survivor) = {
        assert!(
            wait_until(Duration::from_secs(30), || starts(
                &a.stderr(),
                "input/slow.txt"
            ) + starts(
                &b.stderr(),
                "input/slow.txt"
            ) == 1),
            "nobody started it"
        );
        if starts(&a.stderr(), "input/slow.txt") == 1 {
            (a, b)
        } else {
            (b, a)
        }
    };
    signal(&runner.child, "KILL");
    assert!(
        wait_until(Duration::from_secs(60), || get(
            &ep,
            &bucket,
            "output/slow.txt/copy"
        )
        .is_some()),
        "not taken over:\n{}",
        survivor.stderr()
    );
    let log = survivor.stderr();
    assert_eq!(starts(&log, "input/slow.txt"), 1, "{log}");
    drop(runner);
    let (code, err) = survivor.stop();
    assert_eq!(code, Some(0), "{err}");
}

/// Routine S3 outcomes and the other notification routes, on a queue of the test's own
/// (only its messages arrive): a deleted object and a replaced one are acknowledged with one
/// line; a folder marker is skipped; SNS-wrapped and EventBridge-shaped notifications run.
#[test]
fn routine_outcomes_are_acknowledged_and_sns_and_eventbridge_notifications_run() {
    let ep = moto_url();
    let bucket = bucket_name("dwroute");
    create_bucket(&ep, &bucket);
    let queue = rt().block_on(async {
        sqs(&ep)
            .create_queue()
            .queue_name(format!("q-{bucket}"))
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    });
    let cmd = r#"cp "$INPUT_FILE" "$OUTPUT_DIR/copy""#;
    let up = OnUpload::start_from(&ep, &bucket, cmd, &["--queue-url", &queue], &[]);
    assert!(
        up.stderr().contains("has no dead-letter queue"),
        "{}",
        up.stderr()
    );
    put(&ep, &bucket, "input/sns.txt", "via sns\n");
    put(&ep, &bucket, "input/bridge.txt", "via eventbridge\n");
    put(&ep, &bucket, "input/replaced.txt", "new content\n");
    let sns = serde_json::json!({
        "Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": notification(&bucket, "input/sns.txt", &etag_of(&ep, &bucket, "input/sns.txt"))
    });
    let bridge = serde_json::json!({
        "version": "0", "source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {
            "key": "input/bridge.txt", "etag": etag_of(&ep, &bucket, "input/bridge.txt"), "size": 16}}
    });
    send(&ep, &queue, &sns.to_string());
    send(&ep, &queue, &bridge.to_string());
    send(
        &ep,
        &queue,
        &notification(&bucket, "input/never-there.txt", "abc"),
    );
    send(
        &ep,
        &queue,
        &notification(&bucket, "input/replaced.txt", "0123456789abcdef"),
    );
    send(
        &ep,
        &queue,
        &notification(&bucket, "input/folder/", "d41d8cd98f00b204e9800998ecf8427e"),
    );
    let done = wait_until(Duration::from_secs(30), || {
        get(&ep, &bucket, "output/sns.txt/copy").is_some()
            && get(&ep, &bucket, "output/bridge.txt/copy").is_some()
            && queued(&ep, &queue) == 0
    });
    let (code, err) = up.stop();
    assert!(done, "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("input/sns.txt: starting (attempt 1; notified through SNS)"),
        "{err}"
    );
    assert!(
        err.contains("input/bridge.txt: starting (attempt 1; notified through EventBridge)"),
        "{err}"
    );
    assert_eq!(
        err.matches("input/never-there.txt: deleted before it could run; acknowledged")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("input/replaced.txt: replaced by new content")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("input/folder/ is a folder marker: skipped")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains("failed"), "{err}");
}

/// Bad input is one line and an exit code within seconds, before any message is taken.
#[test]
fn on_upload_refuses_what_cannot_work_at_start() {
    let ep = moto_url();
    let bucket = bucket_name("dwbad");
    let queue = rt().block_on(async {
        sqs(&ep)
            .create_queue()
            .queue_name(format!("q-{bucket}"))
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    });
    let missing_queue = queue.replace(&format!("q-{bucket}"), "no-such-queue");
    let state = std::env::temp_dir().join(unique("dwbad"));
    let base = |cmd: &mut std::process::Command, q: &str, prefix: &str| {
        cmd.args(["on-upload", "--bucket", &bucket, "--prefix", prefix])
            .args(["--output-prefix", "output/", "--queue-url", q])
            .args(["--docker-image", IMAGE, "--bash-command", "true"])
            .args(["--aws-cloudwatch-group", "/dwbad"])
            .args(["--state-dir", state.to_str().unwrap()]);
    };
    let cases: Vec<(&str, std::process::Command, i32, &str)> = vec![
        (
            "missing queue",
            dockwatch_with_env(&ep),
            2,
            "does not exist; check --queue-url",
        ),
        (
            "malformed queue URL",
            dockwatch_with_env(&ep),
            2,
            "is not a queue URL",
        ),
        (
            "missing bucket",
            dockwatch_with_env(&ep),
            2,
            "does not exist; create it",
        ),
        (
            "no credentials",
            dockwatch_without_aws_config(),
            2,
            "no AWS credentials found",
        ),
    ];
    for (what, mut cmd, code, says) in cases {
        let q = match what {
            "missing queue" => missing_queue.clone(),
            "malformed queue URL" => "not-a-url".to_string(),
            _ => queue.clone(),
        };
        base(&mut cmd, &q, "input/");
        if what == "no credentials" {
            cmd.args(["--aws-region", REGION, "--aws-endpoint-url", &ep]);
        }
        let t = std::time::Instant::now();
        let o = cmd.output().unwrap();
        let err = stderr(&o);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            t.elapsed()
        );
        assert_eq!(o.status.code(), Some(code), "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    }
    // A Fargate size AWS would refuse, before any call.
    let mut cmd = dockwatch_with_env(&ep);
    base(&mut cmd, &queue, "input/");
    cmd.args([
        "--on",
        "ecs",
        "--ecs-cluster",
        "c",
        "--ecs-subnets",
        "subnet-1",
    ])
    .args(["--ecs-execution-role", "arn:aws:iam::123456789012:role/x"])
    .args(["--ecs-cpu", "256", "--ecs-memory", "4096"]);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not fit --ecs-cpu 256"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    // A configuration that would watch its own outputs is refused before any call.
    let mut cmd = dockwatch_with_env(&ep);
    base(&mut cmd, &queue, "");
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--output-bucket"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&state);
}

/// A hung task is stopped at `--task-timeout`, retried, then left to the dead-letter queue;
/// a run SIGKILLed mid-task leaves its container, which the next start removes before the
/// object runs again.
#[test]
fn a_hung_task_times_out_and_a_killed_runs_container_is_removed_at_the_next_start() {
    let ep = moto_url();
    let bucket = bucket_name("dwhung");
    let cmd = r#"if [ "$S3_KEY" = input/hung.txt ]; then sleep 600; fi; cp "$INPUT_FILE" "$OUTPUT_DIR/copy""#;
    let up = OnUpload::start(
        &ep,
        &bucket,
        cmd,
        &[
            "--task-timeout",
            "2s",
            "--stop-timeout",
            "1s",
            "--max-attempts",
            "2",
            "--visibility-timeout",
            "2s",
        ],
    );
    put(&ep, &bucket, "input/hung.txt", "x\n");
    let dlq = dlq_of(&ep, &bucket);
    let timed_out = wait_until(Duration::from_secs(60), || {
        up.stderr()
            .matches("stopped after --task-timeout 2s")
            .count()
            >= 2
            && queued(&ep, &dlq) == 1
    });
    assert!(timed_out, "{}", up.stderr());
    // Killed in the middle of a task: its container stays behind...
    put(&ep, &bucket, "input/hung.txt", "y\n"); // new content: a new object, hangs again
    assert!(
        wait_until(Duration::from_secs(30), || up
            .stderr()
            .matches("input/hung.txt: starting")
            .count()
            >= 3),
        "{}",
        up.stderr()
    );
    // Its checkpoint is written once the container runs: kill only then.
    let checkpoints = up.dir.join("state/checkpoints");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_dir(&checkpoints)
            .is_ok_and(|d| d
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "json")))),
        "no checkpoint: {}",
        up.stderr()
    );
    signal(&up.child, "KILL");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        containers_with_label(&up.label).len(),
        1,
        "the killed run's container"
    );
    // ...and the next start with the same state directory removes it.
    let log = up.dir.join("second.log");
    let copy = r#"cp "$INPUT_FILE" "$OUTPUT_DIR/copy""#;
    let mut second = OnUpload::command(&ep, &bucket, copy, &up.dir, &up.label, &log)
        .args([
            "--prefix",
            "input/",
            "--output-prefix",
            "output/",
            "--setup",
        ])
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let removed = wait_until(Duration::from_secs(30), || {
        text().contains("of a run that was killed")
    });
    let rerun = wait_until(Duration::from_secs(30), || {
        get(&ep, &bucket, "output/hung.txt/copy").is_some()
    });
    signal(&second, "TERM");
    let _ = second.wait();
    assert!(removed, "{}", text());
    assert!(rerun, "the object ran again: {}", text());
    assert!(containers_with_label(&up.label).is_empty(), "{}", text());
}

/// An empty `--prefix` watches the whole bucket: allowed with the outputs in another bucket
/// (`--output-bucket`), where they start no task.
#[test]
fn an_empty_prefix_works_with_the_outputs_in_another_bucket() {
    let ep = moto_url();
    let bucket = bucket_name("dwall");
    let out = bucket_name("dwallout");
    create_bucket(&ep, &out);
    let dir = std::env::temp_dir().join(unique("dwall"));
    let log = dir.join("stderr.log");
    std::fs::create_dir_all(&dir).unwrap();
    let label = unique("up");
    let copy = r#"cp "$INPUT_FILE" "$OUTPUT_DIR/copy""#;
    let mut child = OnUpload::command(&ep, &bucket, copy, &dir, &label, &log)
        .args(["--prefix", "", "--output-prefix", "results/"])
        .args(["--output-bucket", &out, "--setup"])
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || text()
            .contains("watching s3://")),
        "{}",
        text()
    );
    put(&ep, &bucket, "top.txt", "at the top\n");
    let done = wait_until(Duration::from_secs(30), || {
        get(&ep, &out, "results/top.txt/copy").is_some()
    });
    std::thread::sleep(Duration::from_secs(2)); // anything more would start now
    signal(&child, "TERM");
    let _ = child.wait();
    cleanup(&label);
    let err = text();
    assert!(done, "{err}");
    assert_eq!(
        get(&ep, &out, "results/top.txt/copy").unwrap(),
        "at the top\n"
    );
    assert_eq!(err.matches(": starting").count(), 1, "one task: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while on-upload's start-up waits on an endpoint that never answers: it ends at
/// once (exit 0), not after the start-up checks' time limits.
#[test]
fn a_stop_during_start_up_ends_on_upload_at_once() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", silent.local_addr().unwrap());
    let dir = std::env::temp_dir().join(unique("dwsilent"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr.log");
    let mut child = OnUpload::command(&ep, "b", "true", &dir, &unique("up"), &log)
        .args(["--prefix", "input/", "--output-prefix", "output/"])
        .args(["--queue-url", &format!("{ep}/123456789012/q")])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let took = t.elapsed();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(took < Duration::from_secs(1), "took {took:?}: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}
