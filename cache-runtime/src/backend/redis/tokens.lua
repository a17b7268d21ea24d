-- The tokens an entry depends on besides its namespace's generation (its
-- tags' tokens), each made where there is none. A reader calls it before
-- it computes, only when a read found a token missing: a token made now
-- is older than whatever the body reads. A tag under a live fence (see
-- `tag.lua`) has no token: its entries are not stored; a lapsed fence is
-- replaced by a fresh token.
--
-- KEYS: the token keys (in the entry's slot). ARGV: the tokens' PX ms,
-- then one fresh token per key.
-- Returns the tokens, in the order of KEYS ('' for a fenced one).
local out = {}
local now = nil
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.byte(v, 1) == 70 then
    now = now or now_ms()
    if live(holders(v), now) then
      v = ''
    else
      v = nil
    end
  end
  if v ~= '' and (not v or string.len(v) ~= 16) then
    v = ARGV[i + 1]
    redis.call('SET', k, v, 'PX', ARGV[1])
  end
  out[i] = v
end
return out
