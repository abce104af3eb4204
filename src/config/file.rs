//! Configuration files of the daemons (`download`, `ship`): TOML, read with serde, and one
//! error line naming the file, the line, the column and the key when a file is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A duration as people write it (`"5s"`, `"1h 30m"`), more than 0.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("'{s}' is not a duration ({e}); write e.g. \"5s\""))
    })?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be more than 0, e.g. \"5s\""));
    }
    Ok(Some(v))
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read configuration file '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// `key 'name': `, or empty when the error is not about one key.
        key: String,
        message: String,
    },
}

/// Reads and parses a TOML file; errors name the file, line, column and key.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start).min(text.len());
        let (line, column, key) = locate(&text, start);
        ConfigFileError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key: key.map_or(String::new(), |k| format!("key '{k}': ")),
            message: e.message().trim().replace('\n', "; "),
        }
    })
}

/// Line and column (1-based) of byte `at`, and the key written on that line, with its table
/// (`aws.region`).
fn locate(text: &str, at: usize) -> (usize, usize, Option<String>) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let key = key.map(|k| match table {
        Some(t) => format!("{t}.{k}"),
        None => k,
    });
    (line, column, key)
}

/// The `[aws]` table of a daemon's file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAws {
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
}

impl FileAws {
    /// The flags' AWS settings, with the file's where a flag gives none.
    pub(crate) fn under(self, flags: &crate::cli::AwsArgs) -> crate::cli::AwsArgs {
        crate::cli::AwsArgs {
            aws_region: flags.aws_region.clone().or(self.region),
            aws_profile: flags.aws_profile.clone().or(self.profile),
            aws_endpoint_url: flags.aws_endpoint_url.clone().or(self.endpoint_url),
            ..flags.clone()
        }
    }
}
