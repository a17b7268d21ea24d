//! The Lua scripts of the protocol, one `*.lua` file each (read them there:
//! each starts with its KEYS, ARGV and return values; `lib.lua`, the
//! server's clock and fences, is prepended to those that need it). Every
//! write of the protocol is one script, so it is atomic on the server, and
//! every key a script touches carries the namespace's hash tag, so it runs
//! on one slot.

use redis::Script;

/// The scripts, hashed once (redis-rs sends `EVALSHA`, and the source only
/// when the server does not know it yet).
pub(super) struct Scripts {
    /// Claim a key before computing: the reader's lease (`claim.lua`).
    pub claim: Script,
    /// Compare-and-set store of an entry (`store.lua`).
    pub store: Script,
    /// Replace the caller's lease with a tombstone (`release.lua`).
    pub release: Script,
    /// A namespace's generation: invalidate, fence (`generation.lua`).
    pub generation: Script,
    /// One entry: invalidate, fence (`tombstone.lua`).
    pub tombstone: Script,
    /// An entry's tag tokens, made where missing (`tokens.lua`).
    pub tokens: Script,
    /// A tag: invalidate, fence (`tag.lua`).
    pub tag: Script,
    /// A read of an entry and its deps' values (`deps.lua`).
    pub deps: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            claim: Script::new(concat!(include_str!("lib.lua"), include_str!("claim.lua"))),
            store: Script::new(concat!(include_str!("lib.lua"), include_str!("store.lua"))),
            release: Script::new(include_str!("release.lua")),
            generation: Script::new(concat!(
                include_str!("lib.lua"),
                include_str!("generation.lua")
            )),
            tombstone: Script::new(concat!(
                include_str!("lib.lua"),
                include_str!("tombstone.lua")
            )),
            tokens: Script::new(concat!(include_str!("lib.lua"), include_str!("tokens.lua"))),
            tag: Script::new(concat!(include_str!("lib.lua"), include_str!("tag.lua"))),
            deps: Script::new(include_str!("deps.lua")),
        }
    }
}
