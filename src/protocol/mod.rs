//! The wire protocol: channel grammar (CAIP-2/10/19), client requests, server replies and
//! the push frame, stream positions and the stable error codes. Nothing here does I/O.
pub mod caip;
pub mod channel;
pub mod error;
pub mod mode;
pub mod position;
pub mod reply;
pub mod request;

pub use channel::{Channel, ChannelError, Namespace};
pub use error::ErrorCode;
pub use mode::Mode;
pub use position::Position;

/// Milliseconds since the Unix epoch, as every `timestamp` on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
