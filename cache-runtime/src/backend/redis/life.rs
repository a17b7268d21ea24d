//! Restarts. A server that restarts reloads what it last persisted (an RDB
//! snapshot, an AOF without `appendfsync always`), which may be older than
//! what it had acknowledged: generations and entries that invalidations had
//! replaced come back. So every generation a connection writes carries the
//! prefix's *life token*, and every new connection asks `life.lua` for the
//! token of this run of the server (recorded in `{prefix}:#life` with the
//! server's `run_id`): a run that did not make the record gets a fresh
//! token, and every generation of another life reads as absent, so every
//! entry of the prefix is a miss once. O(1): nothing is scanned. A restart
//! costs one cold cache, as a restart without persistence would; so does a
//! lost record (evicted under `allkeys-*`).
//!
//! Not covered: a server that loses data without restarting (a replica
//! promoted in a failover; see the README's Cluster section), and Redis
//! Cluster, whose nodes restart one by one (no life token there).

use std::time::Duration;

use redis::Script;
use redis::aio::MultiplexedConnection;

use super::handle::bounded;
use crate::backend::Result;
use crate::entry::{self, Token};

/// How a new connection learns its life token (see the module docs).
pub(super) struct Life {
    pub key: String,
    pub script: Script,
    pub op_timeout: Duration,
}

impl Life {
    /// This run's life token; `Ok(None)` when the server will not say
    /// which run it is (an ACL without `INFO`): generations then carry none.
    pub(super) async fn token(&self, conn: &mut MultiplexedConnection) -> Result<Option<Token>> {
        let mut inv = self.script.key(&self.key);
        inv.arg(&entry::token()[..]);
        match bounded(self.op_timeout, inv.invoke_async::<Vec<u8>>(conn)).await {
            Ok(t) => Ok(Token::try_from(t.as_slice()).ok()),
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                Err(e.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache-aside: cannot learn which run of the server this is \
                    (INFO refused?): entries written before a restart from a snapshot could be served");
                Ok(None)
            }
        }
    }
}
