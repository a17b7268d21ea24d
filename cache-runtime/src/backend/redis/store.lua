-- Compare-and-set store: only under the generation the reader saw before
-- computing, and only over exactly its lease ('2') or the live entry it
-- refreshes ('1', by identity). Never over an empty key.
--
-- KEYS: entry, generation. ARGV: mode, expected bytes, generation seen
-- (with its life token), PX ms, entry tail. The tail's expiry field (bytes
-- 17 to 24) holds the TTL in ms; the entry gets its end on the server's
-- clock, so a writer's clock does not decide when its entries expire.
-- The entry carries the generation's token. Returns 1 when stored, 0 when
-- refused. The key keeps at least its remaining life.
local g = redis.call('GET', KEYS[2])
if g ~= ARGV[3] then return 0 end
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[1] == '2' then
  if cur ~= ARGV[2] then return 0 end
elseif string.sub(cur, 1, string.len(ARGV[2])) ~= ARGV[2] then
  return 0
end
local tail = ARGV[5]
local ttl = 0
for i = 17, 24 do ttl = ttl * 256 + string.byte(tail, i) end
local ends = now_ms() + ttl
local be = {}
for i = 8, 1, -1 do
  be[i] = string.char(ends % 256)
  ends = math.floor(ends / 256)
end
tail = string.sub(tail, 1, 16) .. table.concat(be) .. string.sub(tail, 25)
local px = math.max(tonumber(ARGV[4]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], '\202' .. string.sub(g, 1, 16) .. tail, 'PX', px)
return 1
