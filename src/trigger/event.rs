//! S3 event notifications as they arrive in SQS: what a message body means.
//!
//! A body is either S3's `s3:TestEvent` (sent when a notification is configured), or a
//! `Records` array of events; only `ObjectCreated:*` records are uploads. Keys arrive
//! URL-encoded with `+` for spaces (S3's form encoding) and are decoded here.

use serde::Deserialize;

/// One uploaded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upload {
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// Without quotes.
    pub(crate) etag: String,
    pub(crate) size: u64,
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
                size: 5
            }])
        );
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
