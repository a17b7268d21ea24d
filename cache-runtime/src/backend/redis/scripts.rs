//! The Lua scripts of the protocol, one `*.lua` file each (read them there:
//! each starts with its KEYS, ARGV and return values). Every write of the
//! protocol is one script, so it is atomic on the server, and every key a
//! script touches carries the namespace's hash tag, so it runs on one slot.

use redis::Script;

/// The scripts, hashed once (redis-rs sends `EVALSHA`, and the source only
/// when the server does not know it yet).
pub(super) struct Scripts {
    /// Compare-and-set store of an entry (`store.lua`).
    pub store: Script,
    /// Take an entry's lease (`acquire.lua`).
    pub acquire: Script,
    /// Replace the caller's lease with a tombstone (`release.lua`).
    pub release: Script,
    /// Key invalidation: a tombstone and its notice (`tombstone.lua`).
    pub tombstone: Script,
    /// Namespace invalidation: a new generation and its notice (`generation.lua`).
    pub generation: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            store: Script::new(include_str!("store.lua")),
            acquire: Script::new(include_str!("acquire.lua")),
            release: Script::new(include_str!("release.lua")),
            tombstone: Script::new(include_str!("tombstone.lua")),
            generation: Script::new(include_str!("generation.lua")),
        }
    }
}
