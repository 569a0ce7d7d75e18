//! The check every lossless-delivery test makes: each notification arrives once (by
//! `messageId`), and each account's `data.seq` numbers arrive without gap or reorder.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use activity_gateway::client::Notification;

#[derive(Default)]
pub struct ExactlyOnce {
    ids: HashSet<String>,
    last_seq: HashMap<String, i64>,
}

impl ExactlyOnce {
    /// Records a notification; panics on a duplicate, a gap or a reorder.
    pub fn record(&mut self, n: &Notification) {
        let id = n
            .message_id
            .clone()
            .expect("ack mode pushes carry messageId");
        assert!(
            self.ids.insert(id.clone()),
            "duplicate after de-duplication: {id}"
        );
        let seq = n.data["seq"].as_i64().expect("data.seq");
        let prev = self
            .last_seq
            .insert(n.subscribed.clone(), seq)
            .unwrap_or(-1);
        assert_eq!(
            seq,
            prev + 1,
            "gap or reorder on {}: {prev} then {seq}",
            n.subscribed
        );
    }

    /// Distinct notifications so far.
    pub fn count(&self) -> usize {
        self.ids.len()
    }
}
