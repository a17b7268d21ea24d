-- One entry: invalidation ('i': a tombstone over whatever is there), and a
-- transaction scope's fence ('f': fence, 'r': renew, 'e': end), as for a
-- namespace (`generation.lua`). The key keeps at least its remaining life.
-- Every change is published on the channel, in the same script.
--
-- KEYS: entry. ARGV: op, nonce, holder, fence ms, tombstone PX ms, channel,
-- namespace.
-- Returns 1, or 0 when the notice was refused (an ACL without the channel).
local now = now_ms()
local op = ARGV[1]
local cur = redis.call('GET', KEYS[1])
local fenced = cur and string.byte(cur, 1) == 205
local hs = fenced and holders(cur) or {}
local up = fenced and live(hs, now)
-- A new token whenever a holder comes or goes (see generation.lua).
local head = (up and op == 'r') and string.sub(cur, 1, 17) or ('\205' .. ARGV[2])
local v
if op == 'i' then
  v = (not up) and ('\203' .. ARGV[2])
elseif op == 'f' or op == 'r' then
  hs[ARGV[3]] = now + tonumber(ARGV[4])
  v = fence(head, hs, now)
else
  hs[ARGV[3]] = nil
  v = live(hs, now) and fence(head, hs, now) or ('\203' .. ARGV[2])
end
if v then
  local px = math.max(tonumber(ARGV[5]), redis.call('PTTL', KEYS[1]))
  redis.call('SET', KEYS[1], v, 'PX', px)
end
if op == 'r' and up then return 1 end
if not publish(ARGV[6], 'k ' .. ARGV[7] .. ' ' .. KEYS[1]) then return 0 end
return 1
