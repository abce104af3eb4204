//! S3 event notifications as they arrive in SQS: what a message body means.
//!
//! Three routes are understood, and the log line says which one a message came by:
//! - **S3** directly: either S3's `s3:TestEvent` (sent when a notification is configured), or
//!   a `Records` array of events; only `ObjectCreated:*` records are uploads. Keys arrive
//!   URL-encoded with `+` for spaces (S3's form encoding) and are decoded here.
//! - **SNS** (S3 → SNS topic → SQS without raw delivery): `{"Type":"Notification",
//!   "Message":"<the S3 body as a string>"}`; with raw delivery the body is S3's own.
//! - **EventBridge** (S3 → EventBridge rule → SQS, the CloudTrail/EventBridge route):
//!   `{"source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name"},
//!   "object":{"key","etag","size"}}}`; its keys are not URL-encoded. Other detail types are
//!   not uploads.

use serde::Deserialize;

/// One uploaded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upload {
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// Without quotes.
    pub(crate) etag: String,
    pub(crate) size: u64,
    /// The route the notification took: `S3`, `SNS` or `EventBridge`.
    pub(crate) via: &'static str,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// S3's test message: nothing to do.
    Test,
    /// Uploads (possibly none, when every record was another kind of event).
    Uploads(Vec<Upload>),
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    /// SNS.
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    sns_message: Option<String>,
    /// EventBridge.
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    detail: Option<BridgeDetail>,
}

#[derive(Deserialize)]
struct BridgeDetail {
    bucket: BucketEntity,
    object: BridgeObject,
}

#[derive(Deserialize)]
struct BridgeObject {
    key: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
struct ObjectEntity {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: String,
    #[serde(default)]
    size: u64,
}

/// Reads a message body; `Err` says why it is not an S3 notification.
pub(crate) fn parse(body: &str) -> Result<Notice, String> {
    let b: Body = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if b.sns_type.as_deref() == Some("Notification") {
        let inner = b.sns_message.as_deref().unwrap_or_default();
        return Ok(
            match parse_s3(
                serde_json::from_str(inner)
                    .map_err(|e| format!("an SNS notification whose Message is not JSON: {e}"))?,
            )? {
                Notice::Uploads(u) => {
                    Notice::Uploads(u.into_iter().map(|u| Upload { via: "SNS", ..u }).collect())
                }
                t => t,
            },
        );
    }
    if b.source.as_deref() == Some("aws.s3") {
        let Some(d) = b.detail else {
            return Err("an EventBridge event without detail".into());
        };
        if b.detail_type.as_deref() != Some("Object Created") {
            return Ok(Notice::Uploads(Vec::new()));
        }
        return Ok(Notice::Uploads(vec![Upload {
            bucket: d.bucket.name,
            key: d.object.key,
            etag: d.object.etag.trim_matches('"').to_string(),
            size: d.object.size,
            via: "EventBridge",
        }]));
    }
    parse_s3(b)
}

/// S3's own notification body.
fn parse_s3(b: Body) -> Result<Notice, String> {
    if b.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    let records = b
        .records
        .ok_or_else(|| "no Records: not an S3 event notification".to_string())?;
    let mut out = Vec::new();
    for r in records {
        if !r.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        out.push(Upload {
            bucket: r.s3.bucket.name,
            key: decode_key(&r.s3.object.key)?,
            etag: r.s3.object.etag.trim_matches('"').to_string(),
            size: r.s3.object.size,
            via: "S3",
        });
    }
    Ok(Notice::Uploads(out))
}

/// S3's key encoding: `+` is a space, `%XX` a byte.
pub(crate) fn decode_key(k: &str) -> Result<String, String> {
    let b = k.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| bad(k))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(k))?);
                i += 2;
            }
            b'%' => return Err(bad(k)),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad(k))
}

fn bad(k: &str) -> String {
    format!("the key {k:?} is not validly encoded")
}

/// A CloudWatch stream name for a key: `:` and `*` (not allowed) become `_`; at most 512
/// characters.
pub(crate) fn stream_name(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| if c == ':' || c == '*' { '_' } else { c })
        .take(512)
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uploads_and_test_events() {
        let body = r#"{"Records":[
          {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"input/my+file%C3%A9.csv","eTag":"abc","size":5}}},
          {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"input/x"}}}
        ]}"#;
        assert_eq!(
            parse(body).unwrap(),
            Notice::Uploads(vec![Upload {
                bucket: "b".into(),
                key: "input/my fileé.csv".into(),
                etag: "abc".into(),
                size: 5,
                via: "S3",
            }])
        );
        // The same through SNS, and an EventBridge "Object Created" event.
        let sns = serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": body});
        let Notice::Uploads(u) = parse(&sns.to_string()).unwrap() else {
            panic!("uploads")
        };
        assert_eq!((u[0].key.as_str(), u[0].via), ("input/my fileé.csv", "SNS"));
        let bridge = r#"{"version":"0","source":"aws.s3","detail-type":"Object Created",
          "detail":{"bucket":{"name":"b"},"object":{"key":"input/a b.csv","etag":"e1","size":3}}}"#;
        let Notice::Uploads(u) = parse(bridge).unwrap() else {
            panic!("uploads")
        };
        assert_eq!(
            (u[0].key.as_str(), u[0].etag.as_str(), u[0].via),
            ("input/a b.csv", "e1", "EventBridge")
        );
        let deleted = bridge.replace("Object Created", "Object Deleted");
        assert_eq!(parse(&deleted).unwrap(), Notice::Uploads(Vec::new()));
        assert_eq!(
            parse(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#).unwrap(),
            Notice::Test
        );
        assert!(parse("hello").unwrap_err().contains("not JSON"));
        assert!(parse("{}").unwrap_err().contains("no Records"));
    }

    #[test]
    fn key_decoding() {
        assert_eq!(decode_key("a%2Fb+c").unwrap(), "a/b c");
        assert_eq!(decode_key("plain").unwrap(), "plain");
        assert!(decode_key("bad%2").is_err());
        assert!(decode_key("bad%zz").is_err());
        assert!(decode_key("%FF").is_err(), "not UTF-8");
    }

    #[test]
    fn stream_names_are_valid() {
        assert_eq!(stream_name("input/a:b*c.csv"), "input/a_b_c.csv");
        assert_eq!(stream_name(&"x".repeat(600)).len(), 512);
    }
}
