//! `on-upload --setup`: the AWS side, made idempotently — the bucket when missing, a queue
//! `dockwatch-BUCKET-uploads` with a dead-letter queue `dockwatch-BUCKET-uploads-dlq`
//! (redrive after `--max-attempts` receives) and a policy letting S3 send to it, and the
//! bucket's ObjectCreated notification for the prefix (other notifications are kept).

use aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName,
    NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::{TriggerError, log};
use crate::aws::Clients;
use crate::aws::retry::chain;
use crate::config::OnUploadConfig;

/// The id of dockwatch's notification on the bucket.
const NOTIFICATION_ID: &str = "dockwatch-on-upload";

/// Queue names for a bucket (SQS names: 80 characters of letters, digits, - and _).
pub(crate) fn queue_names(bucket: &str) -> (String, String) {
    let clean: String = bucket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    (
        format!("dockwatch-{clean}-uploads"),
        format!("dockwatch-{clean}-uploads-dlq"),
    )
}

fn fail(what: &str, detail: String) -> TriggerError {
    TriggerError::Setup {
        what: what.to_string(),
        detail,
    }
}

/// Makes everything; returns the queue URL.
pub(crate) async fn setup(c: &Clients, a: &OnUploadConfig) -> Result<String, TriggerError> {
    ensure_bucket(c, a).await?;
    let (url, arn, dlq_url) = ensure_queues(c, a).await?;
    set_notification(c, a, &arn).await?;
    log(&format!(
        "set up: s3://{}/{}* -> {url} (dead letters after {} receives: {dlq_url})",
        a.bucket, a.prefix, a.max_attempts
    ));
    Ok(url)
}

/// The bucket, created when missing (in the client's region).
async fn ensure_bucket(c: &Clients, a: &OnUploadConfig) -> Result<(), TriggerError> {
    let aws = &a.aws;
    if c.s3.head_bucket().bucket(&a.bucket).send().await.is_err() {
        let mut req = c.s3.create_bucket().bucket(&a.bucket);
        let region =
            c.s3.config()
                .region()
                .map(|r| r.to_string())
                .or(aws.region.clone())
                .unwrap_or_default();
        if !region.is_empty() && region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => log(&format!("created bucket {}", a.bucket)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
            Err(e) => return Err(fail(&format!("create bucket {}", a.bucket), chain(&e))),
        }
    }
    Ok(())
}

/// The queue and its dead-letter queue, made or found (CreateQueue returns the existing queue
/// when the attributes match), with the redrive policy, S3's permission to send and the
/// visibility timeout: (queue URL, queue ARN, dead-letter queue URL).
async fn ensure_queues(
    c: &Clients,
    a: &OnUploadConfig,
) -> Result<(String, String, String), TriggerError> {
    let (name, dlq_name) = queue_names(&a.bucket);
    let dlq_url = c
        .sqs
        .create_queue()
        .queue_name(&dlq_name)
        .send()
        .await
        .map_err(|e| fail("create the dead-letter queue", chain(&e)))?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = queue_arn(c, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": a.max_attempts.to_string(),
    })
    .to_string();
    let url = c
        .sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .map_err(|e| fail("create the queue", chain(&e)))?
        .queue_url
        .unwrap_or_default();
    let arn = queue_arn(c, &url).await?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "s3-notifications",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{}", a.bucket)}}
        }]
    })
    .to_string();
    c.sqs
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::Policy, policy)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            a.visibility_timeout.as_secs().to_string(),
        )
        .send()
        .await
        .map_err(|e| fail("configure the queue", chain(&e)))?;
    Ok((url, arn, dlq_url))
}

/// The bucket's ObjectCreated notification to the queue `arn` for the prefix, keeping the
/// bucket's other notifications.
async fn set_notification(c: &Clients, a: &OnUploadConfig, arn: &str) -> Result<(), TriggerError> {
    // Some AWS-compatible servers answer an empty configuration in a form the SDK cannot
    // parse (a success status whose body is an error); then there is nothing to keep.
    let current = match c
        .s3
        .get_bucket_notification_configuration()
        .bucket(&a.bucket)
        .send()
        .await
    {
        Ok(cur) => cur,
        Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
            log("the bucket's notification configuration is unreadable (taken as empty)");
            GetBucketNotificationConfigurationOutput::builder().build()
        }
        Err(e) => return Err(fail("read the bucket's notifications", chain(&e))),
    };
    let mut queues: Vec<QueueConfiguration> = current
        .queue_configurations()
        .iter()
        .filter(|q| q.id() != Some(NOTIFICATION_ID))
        .cloned()
        .collect();
    let mut q = QueueConfiguration::builder()
        .id(NOTIFICATION_ID)
        .queue_arn(arn)
        .events(Event::S3ObjectCreated);
    if !a.prefix.is_empty() {
        q = q.filter(
            NotificationConfigurationFilter::builder()
                .key(
                    S3KeyFilter::builder()
                        .filter_rules(
                            FilterRule::builder()
                                .name(FilterRuleName::Prefix)
                                .value(&a.prefix)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        );
    }
    queues.push(
        q.build()
            .map_err(|e| fail("build the notification", e.to_string()))?,
    );
    let conf = NotificationConfiguration::builder()
        .set_queue_configurations(Some(queues))
        .set_topic_configurations(Some(current.topic_configurations().to_vec()))
        .set_lambda_function_configurations(Some(current.lambda_function_configurations().to_vec()))
        .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
        .build();
    c.s3.put_bucket_notification_configuration()
        .bucket(&a.bucket)
        .notification_configuration(conf)
        .send()
        .await
        .map_err(|e| fail("set the bucket notification", chain(&e)))?;
    Ok(())
}

async fn queue_arn(c: &Clients, url: &str) -> Result<String, TriggerError> {
    let r = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| TriggerError::Setup {
            what: "read the queue's ARN".into(),
            detail: chain(&e),
        })?;
    r.attributes()
        .and_then(|m| m.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| TriggerError::Setup {
            what: "read the queue's ARN".into(),
            detail: "the answer has none".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_valid() {
        let (q, d) = queue_names("my.bucket");
        assert_eq!(q, "dockwatch-my-bucket-uploads");
        assert_eq!(d, "dockwatch-my-bucket-uploads-dlq");
        assert!(queue_names(&"b".repeat(63)).1.len() <= 80);
    }
}
