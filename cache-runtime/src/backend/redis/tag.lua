-- A tag's token: invalidation ('i': a fresh token where there is one), and
-- a transaction scope's fence ('f': fence, 'r': renew, 'e': end), as for a
-- namespace (`generation.lua`). A missing token stays missing on 'i': no
-- entry can carry it (a reader makes one before it computes, see
-- `tokens.lua`). While a fence is live no reader stores an entry of the
-- tag (`tokens.lua` hands out no token), so a scope that dies between its
-- COMMIT and its end leaves no entry computed from the data before the
-- commit; the first reader after the fence lapses makes a fresh token.
-- Every change but a renewal is published on the channel, in the same
-- script, as 't <ns> <key>' (local tiers drop the namespace's entries).
--
-- KEYS: the tag's token key. ARGV: op, fresh token, holder, fence ms, PX
-- ms, channel, namespace.
-- Returns 1, or 0 when the notice was refused.
local now = now_ms()
local op = ARGV[1]
local t = redis.call('GET', KEYS[1])
local fenced = t and string.byte(t, 1) == 70
local hs = fenced and holders(t) or {}
local up = fenced and live(hs, now)
local head = (up and op == 'r') and string.sub(t, 1, 17) or ('F' .. ARGV[2])
-- A renewal renews only a fence its holder is still in.
if op == 'r' and hs[ARGV[3]] == nil then return 1 end
local v = nil
if op == 'i' then
  if t and not up then v = ARGV[2] end
elseif op == 'f' or op == 'r' then
  hs[ARGV[3]] = now + tonumber(ARGV[4])
  v = fence(head, hs, now)
else
  hs[ARGV[3]] = nil
  v = live(hs, now) and fence(head, hs, now) or ARGV[2]
end
if v and not set_or_del(KEYS[1], v, 'PX', ARGV[5]) and (op == 'f' or op == 'r') then
  return full()
end
if op == 'r' and up then return 1 end
if not publish(ARGV[6], 't ' .. ARGV[7] .. ' ' .. KEYS[1]) then return 0 end
return 1
