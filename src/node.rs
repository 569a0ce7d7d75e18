//! The node: everything one gateway process owns, shared by the HTTP handlers, the sessions
//! and the background loops behind one `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::broker::Broker;
use crate::chains::Chains;
use crate::config::Settings;
use crate::history::History;
use crate::hub::{ConnId, Hub};
use crate::shutdown::Shutdown;

/// One gateway process's shared state.
pub struct Node {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub history: History,
    pub broker: Arc<Broker>,
    pub chains: Arc<Chains>,
    pub verifier: Verifier,
    pub shutdown: Shutdown,
    /// Who may open a WebSocket session, and the slots the open ones hold.
    pub admission: Admission,
    next_conn: AtomicU64,
}

impl Node {
    pub fn new(
        settings: Arc<Settings>,
        hub: Arc<Hub>,
        history: History,
        broker: Arc<Broker>,
        chains: Arc<Chains>,
        verifier: Verifier,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            admission: Admission::new(&settings),
            settings,
            hub,
            history,
            broker,
            chains,
            verifier,
            shutdown,
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Ready for traffic: not draining (and, with a history, the store is reachable).
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutdown.is_draining() {
            return Err("draining");
        }
        if !self.broker.is_up() {
            return Err("cluster broker unavailable");
        }
        if !self.history.is_available() {
            return Err("history store unavailable");
        }
        Ok(())
    }
}
