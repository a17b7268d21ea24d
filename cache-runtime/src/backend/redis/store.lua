-- Compare-and-set store: only under the generation the reader saw before
-- computing, and only over exactly its lease ('2') or the live entry it
-- refreshes ('1', by identity). Never over an empty key.
--
-- KEYS: entry, generation. ARGV: mode, expected bytes, generation seen
-- (with its life token), PX ms, entry tail (see `entry_bytes` in lib.lua),
-- and 'r' to store the tail as the whole entry, as it is (a fail-safe
-- restore of the entry the lease replaced; its expiry stays), or 'd' for
-- an entry with deps; for a put (or a refresh scope's store), KEYS[3] and KEYS[4] are the key's bucket
-- token and the namespace's any-key token (see `cache/track.rs`), given
-- the fresh value ARGV[7] when the put stores.
-- The entry carries the generation's token. Returns 1 when stored, 0 when
-- refused. The key keeps at least its remaining life.
local g = redis.call('GET', KEYS[2])
if g ~= ARGV[3] then return 0 end
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[1] == '2' then
  if cur ~= ARGV[2] then return 0 end
elseif string.sub(cur, 1, string.len(ARGV[2])) ~= ARGV[2] then
  return 0
end
local px = math.max(tonumber(ARGV[4]), redis.call('PTTL', KEYS[1]))
local v = ARGV[6] == 'r' and ARGV[5] or entry_bytes(g, ARGV[5], ARGV[6] == 'd' and '\206' or nil)
redis.call('SET', KEYS[1], v, 'PX', px)
if KEYS[4] then
  redis.call('SET', KEYS[3], ARGV[7], 'XX', 'KEEPTTL')
  redis.call('SET', KEYS[4], ARGV[7], 'XX', 'KEEPTTL')
end
return 1
