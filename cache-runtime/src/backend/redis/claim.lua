-- A reader claims the key before it computes: it replaces what it read
-- with its lease, and later stores only over exactly that lease. The
-- namespace gets a generation here if it has none (a store never makes
-- one). Leases and fences are judged by the server's clock.
--
-- KEYS: entry, generation. ARGV: expect mode ('0': the key was empty, '1':
-- it started with ARGV[2]), expected bytes, lease nonce, lease ms, 'w'
-- (others wait for this lease) or 'n' (they do not), fresh generation,
-- generation PX ms, the connection's life token ('' for none: see
-- life.rs), the lease key's PX ms, and for a writer's claim (mode '3': a
-- put, which takes the key whatever it holds but a live fence, and
-- publishes the key's notice) the channel and the namespace, and KEYS[3]
-- and KEYS[4], the key's bucket token and the namespace's any-key token
-- (see `cache/track.rs`), which a writer's claim gives a fresh value where
-- there is one. A generation of another life counts as
-- absent. The lease's end (inside it) is when others may take it over;
-- the key itself lives longer, so that an owner whose computation outlasts
-- its lease can still store over it if nobody did take it over.
-- Returns {status, generation, lease, 1 when the lease replaced exactly
-- the bytes read (mode '1')}: 1 (claimed: the lease; 4: claimed, but the
-- notice was refused), 2 (another
-- caller's live lease: wait for it), 3 (a live fence: compute, do not
-- store), or 0 (the key changed since it was read).
local now = now_ms()
local g = redis.call('GET', KEYS[2])
if g and string.byte(g, 1) == 70 then
  if live(holders(g), now) then return {3, '', '', 0} end
  g = false
end
local suffix = ARGV[8] ~= '' and (':' .. ARGV[8]) or ''
if g and not (string.len(g) == 16 + string.len(suffix) and string.sub(g, 17) == suffix) then
  g = false
end
if not g then
  g = ARGV[6] .. suffix
  redis.call('SET', KEYS[2], g, 'PX', ARGV[7])
end
local cur = redis.call('GET', KEYS[1])
local take = ARGV[1] == '3'
if take then
  if cur and string.byte(cur, 1) == 205 and live(holders(cur), now) then return {3, g, '', 0} end
elseif cur and string.byte(cur, 1) == 204 and string.len(cur) == 34 then
  local live_lease = tonumber(string.sub(cur, 18, 33)) > now
  if live_lease and string.sub(cur, 34) == 'w' then return {2, g, '', 0} end
  take = not live_lease
elseif cur and string.byte(cur, 1) == 205 then
  if live(holders(cur), now) then return {3, g, '', 0} end
  take = true
end
if not take then
  if ARGV[1] == '0' then
    take = not cur
  else
    take = cur and string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2]
  end
end
if not take then return {0, g, '', 0} end
local exact = (ARGV[1] == '1' and cur and string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2]) and 1 or 0
local lease = '\204' .. ARGV[3] .. string.format('%016d', now + tonumber(ARGV[4])) .. ARGV[5]
local px = math.max(tonumber(ARGV[9]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], lease, 'PX', px)
if ARGV[1] == '3' and KEYS[4] then
  redis.call('SET', KEYS[3], ARGV[3], 'XX', 'KEEPTTL')
  redis.call('SET', KEYS[4], ARGV[3], 'XX', 'KEEPTTL')
end
if ARGV[1] == '3' and not publish(ARGV[10], 'k ' .. ARGV[11] .. ' ' .. KEYS[1]) then
  return {4, g, lease, exact}
end
return {1, g, lease, exact}
