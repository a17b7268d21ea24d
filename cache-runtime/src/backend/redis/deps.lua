-- A read of an entry that may have deps (see `entry/mod.rs`): the entry,
-- the generation and the current value of each of the entry's deps, in
-- one round trip. Read only; not used in Cluster mode, where the deps may
-- live in other slots.
--
-- KEYS: entry, generation. Returns {entry or nil, generation or nil, then
-- one value (or nil) per dep, in the entry's order}.
local e = redis.call('GET', KEYS[1])
local out = {e or false, redis.call('GET', KEYS[2]) or false}
-- Magic 0xCE; the header is 53 bytes; then the deps' length (u16 BE).
if e and string.byte(e, 1) == 206 and string.len(e) >= 55 then
  local p = 56
  local stop = p + string.byte(e, 54) * 256 + string.byte(e, 55)
  while p < stop and #out < 300 do
    local kl = string.byte(e, p)
    if not kl then break end
    local k = string.sub(e, p + 1, p + kl)
    local vl = string.byte(e, p + 1 + kl)
    if not vl then break end
    p = p + 2 + kl + vl
    out[#out + 1] = redis.call('GET', k) or false
  end
end
return out
