-- Compare-and-set store. KEYS: entry, generation. ARGV: expect mode ("0":
-- key must be empty, "1": key must start with ARGV[2], "2": key must be
-- exactly ARGV[2]), expected bytes, generation seen before computing
-- ("" = none), fresh generation, PX milliseconds, entry tail. Returns 1
-- when stored, 0 when refused. The key keeps at least its remaining life.
local g = redis.call('GET', KEYS[2])
if g and string.len(g) ~= 16 then g = false end
if not g then
  if ARGV[3] ~= '' then return 0 end
  redis.call('SET', KEYS[2], ARGV[4])
  g = ARGV[4]
elseif g ~= ARGV[3] then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif ARGV[1] == '2' then
  if cur ~= ARGV[2] then return 0 end
elseif (not cur) or string.sub(cur, 1, string.len(ARGV[2])) ~= ARGV[2] then
  return 0
end
local px = math.max(tonumber(ARGV[5]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], '\202' .. g .. ARGV[6], 'PX', px)
return 1
