-- Replaces the caller's lease with a tombstone. KEYS: entry. ARGV: lease,
-- tombstone, PX milliseconds.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local px = math.max(tonumber(ARGV[3]), redis.call('PTTL', KEYS[1]))
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
end
return 1
