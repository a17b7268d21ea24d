-- One entry: invalidation ('i': a tombstone over whatever is there), and a
-- transaction scope's fence ('f': fence, 'r': renew, 'e': end, 'p': end
-- with a put's value), as for a namespace (`generation.lua`). The key
-- keeps at least its remaining life. Every change is published on the
-- channel, in the same script.
--
-- A put inside a scope stores its value when the scope ends ('p') only if
-- nothing else happened to the key meanwhile: the fence's head is still
-- the one its own 'f' returned (an invalidation under a live fence, and
-- every holder that comes or goes, changes the head), no other holder is
-- live, and the namespace's generation is still the one 'f' returned.
-- Otherwise 'p' is 'e': a tombstone.
--
-- Every change but a renewal also gives the key's bucket token and the
-- namespace's any-key token (KEYS[3], KEYS[4], see `cache/track.rs`) a
-- fresh value where there is one: entries computed from this key's old
-- value read as misses.
--
-- KEYS: entry, generation, bucket, any key. ARGV: op, nonce, holder, fence ms, tombstone PX
-- ms, channel, namespace, '' (the place of generation.lua's life token);
-- for 'p' also the head and generation 'f'
-- returned, the entry tail (see `entry_bytes` in lib.lua) and its PX ms.
-- Returns {published (1, or 0 when the notice was refused), the fence's
-- head after the change ('' when none), the generation ('' when none),
-- 1 when 'p' stored its value}.
local now = now_ms()
local op = ARGV[1]
local cur = redis.call('GET', KEYS[1])
local fenced = cur and string.byte(cur, 1) == 205
local hs = fenced and holders(cur) or {}
local up = fenced and live(hs, now)
-- A new token whenever a holder comes or goes (see generation.lua), and
-- whenever a write meets a live fence.
local head = (up and op == 'r') and string.sub(cur, 1, 17) or ('\205' .. ARGV[2])
local g = redis.call('GET', KEYS[2]) or ''
-- A renewal renews only a fence its holder is still in: one that lands
-- after its scope ended ('e', 'p') must not fence the key again.
if op == 'r' and hs[ARGV[3]] == nil then
  return {1, up and string.sub(cur, 1, 17) or '', g, 0}
end
local v
local px = tonumber(ARGV[5])
local stored = 0
if op == 'i' then
  v = up and fence(head, hs, now) or ('\203' .. ARGV[2])
elseif op == 'f' or op == 'r' then
  hs[ARGV[3]] = now + tonumber(ARGV[4])
  v = fence(head, hs, now)
else
  local same = fenced and string.sub(cur, 1, 17) == ARGV[9]
  hs[ARGV[3]] = nil
  if live(hs, now) then
    v = fence(head, hs, now)
  elseif op == 'p' and same and g == ARGV[10] and string.byte(g, 1) ~= 70 then
    v = entry_bytes(g, ARGV[11])
    px = math.max(px, tonumber(ARGV[12]))
    stored = 1
  else
    v = '\203' .. ARGV[2]
  end
end
if not set_or_del(KEYS[1], v, 'PX', math.max(px, redis.call('PTTL', KEYS[1]))) then
  if op == 'f' or op == 'r' then return full() end
  -- Full, and the key empty: nothing to guard (no put's value either).
  v = ''
  stored = 0
end
if op ~= 'r' then
  set_or_del(KEYS[3], ARGV[2], 'XX', 'KEEPTTL')
  set_or_del(KEYS[4], ARGV[2], 'XX', 'KEEPTTL')
end
local out_head = v ~= '' and string.byte(v, 1) == 205 and string.sub(v, 1, 17) or ''
if op == 'r' and up then return {1, out_head, g, 0} end
if not publish(ARGV[6], 'k ' .. ARGV[7] .. ' ' .. KEYS[1]) then return {0, out_head, g, stored} end
return {1, out_head, g, stored}
