-- A tag's invalidation: its token gets a fresh value, so every entry that
-- carries the old one reads as a miss; published on the channel in the
-- same script (local tiers drop the namespace's entries). A missing token
-- stays missing: no entry can carry it (a reader makes one before it
-- computes, see `tokens.lua`), and a missing one matches no entry.
--
-- KEYS: the tag's token key. ARGV: fresh token, PX ms, channel, namespace.
-- Returns 1, or 0 when the notice was refused.
redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2])
if type(redis.pcall('PUBLISH', ARGV[3], 't ' .. ARGV[4] .. ' ' .. KEYS[1])) == 'table' then
  return 0
end
return 1
