//! The push handler of one connection: decodes redis-rs's pushes and hands
//! the invalidation channel's messages, and the connection's end, to the
//! coherence layer ([`Hub`]), synchronously and in stream order.

use std::sync::Arc;

use redis::aio::AsyncPushSender;
use redis::{PushInfo, PushKind, Value};

use crate::coherence::Hub;

/// Knows its slot and connection id, so pushes of a replaced connection
/// never touch its successor's views.
pub(super) struct ConnSink {
    pub(super) hub: Arc<Hub>,
    pub(super) slot: usize,
    pub(super) conn: u64,
}

impl AsyncPushSender for ConnSink {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Message => {
                if let [_channel, Value::BulkString(payload)] = info.data.as_slice() {
                    self.hub.on_message(self.slot, self.conn, payload);
                }
            }
            PushKind::Disconnection => self.hub.on_disconnect(self.slot, self.conn),
            _ => {}
        }
        Ok(())
    }
}
