-- Takes an entry's lease. KEYS: entry. ARGV: expect mode ("0": empty,
-- "1": starts with ARGV[2]), expected prefix, lease, PX milliseconds.
-- Returns 1 (acquired) or 0 (the key changed since it was read).
local cur = redis.call('GET', KEYS[1])
local ok
if ARGV[1] == '0' then
  ok = not cur
else
  ok = cur and string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2]
end
if not ok then return 0 end
local px = math.max(tonumber(ARGV[4]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], ARGV[3], 'PX', px)
return 1
