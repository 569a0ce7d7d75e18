//! A chain's operator mode: how its `up`/`down` status is decided. On the HTTP admin API
//! (`{"mode":"down"}`), in the history store and on the cluster broker, always as the
//! lower-case name.

use serde::{Deserialize, Serialize};

/// How a chain's status is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Up while signs of life are fresh.
    Auto,
    /// Forced up by an operator (still down while the store or the broker is failing).
    Up,
    /// Forced down by an operator.
    Down,
}

impl Mode {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Up => "up",
            Mode::Down => "down",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "auto" => Some(Mode::Auto),
            "up" => Some(Mode::Up),
            "down" => Some(Mode::Down),
            _ => None,
        }
    }
}
