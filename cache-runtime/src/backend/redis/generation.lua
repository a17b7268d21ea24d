-- Namespace invalidation: a new generation, and its notice. KEYS:
-- generation. ARGV: token, channel, message. Returns 1, or 0 when the
-- notice was refused.
redis.call('SET', KEYS[1], ARGV[1])
if type(redis.pcall('PUBLISH', ARGV[2], ARGV[3])) == 'table' then return 0 end
return 1
