-- A namespace's generation: invalidation ('i': a fresh token), and a
-- transaction scope's fence ('f': fence, 'r': renew, 'e': end). A live
-- fence stays up until its last holder ends or expires; an invalidation
-- under it changes nothing, as no entry can be stored under a fence.
-- Every change is published on the channel, in the same script.
--
-- KEYS: generation. ARGV: op, fresh token, holder, fence ms, generation PX
-- ms, channel, namespace, the connection's life token ('' for none).
-- Returns {published (1, or 0 when refused), the generation's new value}.
local now = now_ms()
local op = ARGV[1]
local g = redis.call('GET', KEYS[1])
local fenced = g and string.byte(g, 1) == 70
local hs = fenced and holders(g) or {}
local up = fenced and live(hs, now)
-- A fence gets a new token whenever a holder comes or goes (not when one
-- renews): readers key their in-process flights by it, and a reader that
-- starts after a scope ended must not join a flight from before.
local head = (up and op == 'r') and string.sub(g, 1, 17) or ('F' .. ARGV[2])
-- A renewal renews only a fence its holder is still in: one that lands
-- after its scope ended must not fence the namespace again.
if op == 'r' and hs[ARGV[3]] == nil then return {1, g or ''} end
local fresh = ARGV[2] .. (ARGV[8] ~= '' and (':' .. ARGV[8]) or '')
local v
if op == 'i' then
  v = up and g or fresh
elseif op == 'f' or op == 'r' then
  hs[ARGV[3]] = now + tonumber(ARGV[4])
  v = fence(head, hs, now)
else
  hs[ARGV[3]] = nil
  v = live(hs, now) and fence(head, hs, now) or fresh
end
if not set_or_del(KEYS[1], v, 'PX', ARGV[5]) then
  if op == 'f' or op == 'r' then return full() end
  -- Full, and no generation: every entry of the old one fails already;
  -- views learn that they know none ('-').
  v = ''
  if not publish(ARGV[6], 'g ' .. ARGV[7] .. ' -') then return {0, v} end
  return {1, v}
end
if op == 'r' and up then return {1, v} end
if not publish(ARGV[6], 'g ' .. ARGV[7] .. ' ' .. v) then return {0, v} end
return {1, v}
