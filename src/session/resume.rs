//! Resume on subscribe: replaying a stream's history after a client's last acknowledged
//! position, then continuing live with no gap and no duplicate at the seam.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::subscriptions::Held;
use super::{Session, Stop};
use crate::protocol::request::WirePosition;

/// What a subscribe must replay once its reply is queued.
pub(super) struct Resume;

impl Session {
    pub(super) async fn prepare_resume(
        &mut self,
        _held: &[Held],
        _positions: &HashMap<String, WirePosition>,
        _extra: &mut Map<String, Value>,
    ) -> Option<Resume> {
        None
    }

    pub(super) async fn replay(&mut self, _subscription_id: &Arc<str>, _resume: Option<Resume>) -> Option<Stop> {
        None
    }
}
