//! The JetStream connection of the consumer: the client, and the stream and durable consumer
//! found or created on it. Rebuilt from scratch after an error.

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, StorageType};

use crate::config::JetStreamConfig;

/// Any error of the JetStream client.
pub type Error = async_nats::Error;

/// The connection-level state of the consumer.
pub struct Link {
    /// The NATS client (reconnects on its own).
    pub client: async_nats::Client,
    /// The stream, once found or created.
    pub stream: Option<stream::Stream>,
    /// The durable pull consumer, once found or created.
    pub consumer: Option<PullConsumer>,
}

impl Link {
    /// Connects (retrying the first connection in the background).
    pub async fn connect(url: &str) -> Result<Link, Error> {
        let client = async_nats::ConnectOptions::new()
            .name("activity-gateway ingest")
            .retry_on_initial_connect()
            .connect(url)
            .await?;
        Ok(Link {
            client,
            stream: None,
            consumer: None,
        })
    }

    /// Forgets the stream and consumer, so the next round sets them up again.
    pub fn reset(&mut self) {
        self.stream = None;
        self.consumer = None;
    }

    /// Creates or finds the stream and the durable consumer.
    pub async fn setup(&mut self, cfg: &JetStreamConfig) -> Result<(), Error> {
        let js = jetstream::new(self.client.clone());
        let stream = if cfg.create_stream {
            js.get_or_create_stream(stream::Config {
                name: cfg.stream.clone(),
                subjects: cfg.stream_subjects(),
                storage: StorageType::File,
                ..Default::default()
            })
            .await?
        } else {
            js.get_stream(&cfg.stream).await?
        };
        let subjects = cfg.stream_subjects();
        let consumer_config = pull::Config {
            durable_name: Some(cfg.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: cfg.ack_wait,
            max_ack_pending: cfg.batch as i64,
            // One subject filters the classic way; several need a 2.10 server (an older one
            // ignores the list and delivers the whole stream, which holds only these).
            filter_subject: match subjects.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: if subjects.len() > 1 {
                subjects
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        // Create-or-update, so a changed ack_wait or batch applies; an existing consumer
        // that cannot be updated is used as it is.
        let consumer = match stream.create_consumer(consumer_config).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, durable = %cfg.durable, "Cannot create or update the JetStream consumer; using it as it is.");
                stream.get_consumer(&cfg.durable).await?
            }
        };
        tracing::info!(stream = %cfg.stream, durable = %cfg.durable, "JetStream ingest consuming.");
        self.stream = Some(stream);
        self.consumer = Some(consumer);
        Ok(())
    }
}
