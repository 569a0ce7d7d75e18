//! Any text frame a client sends is either a request or refused with one of the codes
//! docs/protocol.md lists for a frame that is not a request, echoing its `data.requestId`.
#![no_main]

use activity_gateway::protocol::request;
use activity_gateway::protocol::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(err) = request::parse(text) {
        assert!(
            matches!(
                err.code,
                ErrorCode::InvalidJson | ErrorCode::InvalidMessage | ErrorCode::UnknownEvent
            ),
            "undocumented code {:?}",
            err.code
        );
        assert!(!err.message.is_empty());
        let sent = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.pointer("/data/requestId")
                    .and_then(|id| id.as_str())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
            });
        assert_eq!(err.request_id, sent, "requestId not echoed");
    }
});
