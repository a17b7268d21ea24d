-- Which run of the server this prefix's data belongs to. A restart may
-- reload an older snapshot, bringing back generations that invalidations
-- had replaced; so every generation carries the prefix's life token, and a
-- server run that did not make it (the record holds another run_id) gets a
-- fresh one, which makes every older generation count as absent.
--
-- KEYS: the life record. ARGV: a fresh life token.
-- Returns the life token of this run of the server.
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(run) + 1) == run .. ':' then
  return string.sub(cur, string.len(run) + 2)
end
redis.call('SET', KEYS[1], run .. ':' .. ARGV[1])
return ARGV[1]
