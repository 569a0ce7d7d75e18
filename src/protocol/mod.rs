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

/// Most bytes a push frame adds to its payload: the envelope, a subscription id (a UUID), a
/// channel of up to `MAX_CHANNEL_LEN` bytes, the message id and position, `redelivered` and
/// the timestamp (about 520 bytes at most), rounded up.
pub const MAX_FRAME_OVERHEAD: usize = 1024;

/// Milliseconds since the Unix epoch, as every `timestamp` on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
