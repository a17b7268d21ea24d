-- Key invalidation: a tombstone over whatever is there, and its notice.
-- KEYS: entry. ARGV: tombstone, PX milliseconds, channel, message.
-- Returns 1, or 0 when the notice was refused (an ACL without the channel).
local px = math.max(tonumber(ARGV[2]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
if type(redis.pcall('PUBLISH', ARGV[3], ARGV[4])) == 'table' then return 0 end
return 1
