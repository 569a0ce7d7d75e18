//! Starting and stopping a gateway: build the node from settings, bind, serve, drain.
//!
//! Start-up order, each part built from the ones before it: auth, chain registry and hub;
//! the broker connected (its sending half exists from then on); the history opened with that
//! sending half as its commit listener; the broker's receiving side started with the history;
//! chain health restored; then TLS, the listeners, the server and the JetStream consumer.
//! Drain stops them in reverse: ingest, sessions, server, chain health, broker (its queue
//! sent), history.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{AuthSetupError, Verifier};
use crate::broker::{self, ConnectError};
use crate::chains::{Chains, Registry};
use crate::config::Settings;
use crate::history::{History, HistoryError};
use crate::hub::Hub;
use crate::ingest::jetstream::Ingest;
use crate::node::{Delivery, Node};
use crate::shutdown::Shutdown;
use crate::tls::{Tls, TlsError};
use crate::{http, metrics, server};

/// The gateway could not start: which part failed, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[auth]` is unusable.
    #[error("auth: {0}")]
    Auth(#[source] AuthSetupError),
    /// `[chains]` is unusable.
    #[error("chains: {0}; fix the [chains] settings")]
    Chains(String),
    /// The cluster broker's address is unusable.
    #[error("broker: {0}")]
    Broker(#[source] ConnectError),
    /// The history store could not be opened.
    #[error("history store: {0}; check [storage] and [history], and that the database is reachable, then start again")]
    HistoryStore(#[source] HistoryError),
    /// The stored chain state could not be read.
    #[error("chain state: {0}; check that the history store is reachable, then start again")]
    ChainState(#[source] HistoryError),
    /// `[server.tls]` is unusable.
    #[error("{0}")]
    Tls(#[source] TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}; free the address or choose another")]
    Bind {
        /// The address, and the setting it comes from when not `server.listen`.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// A started gateway.
pub struct Gateway {
    /// The node's shared state.
    pub node: Arc<Node>,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `metrics.listen` gives it its own listener.
    pub metrics_addr: Option<SocketAddr>,
    /// The HTTP server, stopped with the stop signal.
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
        metrics::spawn_upkeep(handle.clone(), crate::history::sqlite_memory_used);
        let settings = Arc::new(settings);
        let verifier = Verifier::new(&settings.auth).map_err(StartError::Auth)?;
        let registry = Registry::new(settings.chains.clone()).map_err(StartError::Chains)?;
        let shutdown = Shutdown::new();
        let hub = Arc::new(Hub::new());
        let delivery = Arc::new(Delivery {
            hub: hub.clone(),
            registry: registry.clone(),
        });
        let connected = broker::connect(&settings.broker, delivery)
            .await
            .map_err(StartError::Broker)?;
        let history = History::open(
            &settings.storage,
            &settings.history,
            Arc::new(connected.outlet()),
        )
        .await
        .map_err(StartError::HistoryStore)?;
        let broker = Arc::new(connected.start(history.clone()));
        let chains = Chains::new(registry, history.clone(), broker.clone());
        // Stored overrides and signs of life apply before the node serves anyone.
        let restored = chains.restore().await.map_err(StartError::ChainState)?;
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

        let tls = Tls::from_config(&settings.server.tls).map_err(StartError::Tls)?;
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
        // What the broker still queues is sent before the history closes: nothing committed
        // stays unannounced to the other nodes.
        self.node.broker.close().await;
        self.node.history.close().await;
        tracing::info!("Stopped.");
    }
}
