//! `[ingest.jetstream]`: where the JetStream consumer reads account activity and chain
//! heartbeats from, and how it batches and acknowledges them.

use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::string_list;

/// `[ingest.jetstream]`: consume account activity from a JetStream stream. Disabled unless
/// `url` is set. `Debug` redacts the URL's credentials.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamConfig {
    /// `nats://host:4222` (several servers comma-separated); unset: no JetStream ingest.
    pub url: Option<String>,
    /// The stream's name.
    pub stream: String,
    /// The stream's subjects, before `subject_prefix`.
    #[serde(deserialize_with = "string_list")]
    pub subjects: Vec<String>,
    /// Tokens put in front of every subject (`tenant1` → `tenant1.activity.>`); empty: none.
    pub subject_prefix: String,
    /// The durable consumer's name, shared by every node.
    pub durable: String,
    /// Messages per fetch, per group commit, and the consumer's `max_ack_pending`.
    pub batch: usize,
    /// How long JetStream waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Create the stream (file storage, these subjects) when it does not exist.
    pub create_stream: bool,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "ACTIVITY".into(),
            subjects: vec!["activity.>".into(), "chains.>".into()],
            subject_prefix: String::new(),
            durable: "activity-gateway".into(),
            batch: 256,
            ack_wait: Duration::from_secs(30),
            create_stream: true,
        }
    }
}

impl std::fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("url", &self.url.as_deref().map(crate::config::redact::url))
            .field("stream", &self.stream)
            .field("subjects", &self.subjects)
            .field("subject_prefix", &self.subject_prefix)
            .field("durable", &self.durable)
            .field("batch", &self.batch)
            .field("ack_wait", &self.ack_wait)
            .field("create_stream", &self.create_stream)
            .finish()
    }
}

impl JetStreamConfig {
    /// Refuses settings the consumer could not run with; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        for server in url.split(',') {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| {
                    format!(
                        "ingest.jetstream.url: {:?} is not a NATS server address ({e})",
                        crate::config::redact::url(server.trim())
                    )
                })?;
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !name_ok(&self.stream) {
            return Err("ingest.jetstream.stream must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'".into());
        }
        if !name_ok(&self.durable) {
            return Err("ingest.jetstream.durable must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'".into());
        }
        if self.subjects.is_empty() {
            return Err("ingest.jetstream.subjects must name at least one subject".into());
        }
        if self.subject_prefix.starts_with('.') || self.subject_prefix.ends_with('.') {
            return Err("ingest.jetstream.subject_prefix must not start or end with '.'".into());
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err("ingest.jetstream.batch must be between 1 and 10000".into());
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err("ingest.jetstream.ack_wait must be at least 1s".into());
        }
        Ok(())
    }

    /// The subjects as stored in the stream (with the prefix).
    pub fn stream_subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .map(|s| match self.subject_prefix.as_str() {
                "" => s.clone(),
                p => format!("{p}.{s}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c = JetStreamConfig::default();
        assert!(c.url.is_none() && c.validate().is_ok());
        assert_eq!(c.stream_subjects(), ["activity.>", "chains.>"]);
        let c = JetStreamConfig {
            url: Some("nats://127.0.0.1:4222".into()),
            subject_prefix: "t1".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.stream_subjects(), ["t1.activity.>", "t1.chains.>"]);
        for bad in [
            JetStreamConfig {
                batch: 0,
                ..c.clone()
            },
            JetStreamConfig {
                stream: "a.b".into(),
                ..c.clone()
            },
            JetStreamConfig {
                subjects: vec![],
                ..c.clone()
            },
            JetStreamConfig {
                ack_wait: Duration::from_millis(10),
                ..c.clone()
            },
            JetStreamConfig {
                subject_prefix: "t1.".into(),
                ..c.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
