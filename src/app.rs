//! Starting and stopping a gateway: build the node from settings, bind, serve, drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Verifier;
use crate::broker::{Broker, NatsBroker};
use crate::chains::{Chains, Registry};
use crate::config::Settings;
use crate::history::History;
use crate::hub::Hub;
use crate::ingest::jetstream::Ingest;
use crate::ingest::HubListener;
use crate::node::Node;
use crate::shutdown::Shutdown;
use crate::tls::Tls;
use crate::{http, metrics, server};

/// The gateway could not start; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
}

/// A started gateway.
pub struct Gateway {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `metrics.listen` gives it its own listener.
    pub metrics_addr: Option<SocketAddr>,
    server: tokio::task::JoinHandle<()>,
    /// The JetStream consumer, when `ingest.jetstream.url` is set; stopped first on drain.
    ingest: Option<Ingest>,
    /// Chain health's clock; it writes the last signs of life once more when stopped,
    /// before the history closes.
    chains_task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves `/metrics` there until the node stops.
async fn serve_metrics(
    listen: &str,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: &Shutdown,
) -> Result<SocketAddr, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: format!("{listen} (metrics.listen)"),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let router = http::metrics_router(handle).fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            "only /metrics is served here\n",
        )
    });
    let stop = shutdown.stop_token();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "The metrics listener stopped.");
        }
    });
    Ok(addr)
}

impl Gateway {
    /// Builds the node and binds the listener.
    pub async fn start(settings: Settings) -> Result<Gateway, StartError> {
        let handle = metrics::install().map_err(StartError::Metrics)?;
        metrics::spawn_upkeep(handle.clone());
        let settings = Arc::new(settings);
        let verifier =
            Verifier::new(&settings.auth).map_err(|e| StartError::Config(format!("auth: {e}")))?;
        let registry = Registry::new(settings.chains.clone()).map_err(StartError::Config)?;
        let shutdown = Shutdown::new();
        let hub = Arc::new(Hub::new());
        let broker = Arc::new(match &settings.broker.url {
            None => Broker::Local(hub.clone()),
            Some(url) => Broker::Nats(
                NatsBroker::connect(
                    url,
                    &settings.broker.subject_prefix,
                    hub.clone(),
                    registry.clone(),
                )
                .await
                .map_err(|e| StartError::Config(format!("broker: {e}")))?,
            ),
        });
        let listener = Arc::new(HubListener::new(broker.clone()));
        let history = History::open(&settings.storage, &settings.history, listener)
            .await
            .map_err(|e| StartError::Config(format!("history store: {e}")))?;
        if let Broker::Nats(n) = &*broker {
            n.set_history(history.clone());
        }
        let chains = Chains::new(registry, history.clone(), broker.clone());
        // Stored overrides and signs of life apply before the node serves anyone.
        let restored = chains
            .restore()
            .await
            .map_err(|e| StartError::Config(format!("chain state: {e}")))?;
        tracing::debug!(restored, "Chain state restored.");
        let node = Arc::new(Node::new(
            settings.clone(),
            hub,
            history,
            broker,
            chains.clone(),
            verifier,
            shutdown.clone(),
        ));
        let chains_task = tokio::spawn(chains.run(shutdown.stop_token()));

        let tls = Tls::from_config(&settings.server.tls)
            .map_err(|e| StartError::Config(e.to_string()))?;
        if let Some(tls) = &tls {
            tls.spawn_reloader(shutdown.stop_token());
        }
        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.server.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.server.listen.clone(),
            source,
        })?;
        let metrics_addr = match &settings.metrics.listen {
            Some(listen) => Some(serve_metrics(listen, handle.clone(), &shutdown).await?),
            None => None,
        };
        let router = http::router(node.clone(), handle);
        let server = tokio::spawn(server::serve(
            listener,
            router,
            settings.server.clone(),
            tls,
            shutdown.stop_token(),
        ));
        let ingest = Ingest::spawn(node.clone());
        Ok(Gateway {
            node,
            addr,
            metrics_addr,
            server,
            ingest,
            chains_task,
        })
    }

    /// Drains: refuses new upgrades, closes sessions spread over the drain window, then stops.
    pub async fn drain(self) {
        let shutdown = self.node.shutdown.clone();
        let window = self.node.settings.server.drain_window;
        tracing::info!(window_ms = window.as_millis() as u64, "Draining.");
        shutdown.start_drain();
        // A draining node takes no more work from the stream: the others get it.
        if let Some(ingest) = self.ingest {
            ingest.stop().await;
        }
        shutdown.sessions().close();
        if tokio::time::timeout(window + Duration::from_secs(2), shutdown.sessions().wait())
            .await
            .is_err()
        {
            tracing::warn!("Drain window passed with sessions still open; stopping anyway.");
        }
        shutdown.stop();
        let _ = self.server.await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.chains_task).await;
        self.node.history.close().await;
        tracing::info!("Stopped.");
    }
}
