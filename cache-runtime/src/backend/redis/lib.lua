-- Helpers shared by the scripts (prepended to each of them): the server's
-- clock, and fences. A fence is a head (a magic byte and a token, 17
-- bytes) and its holders, "<holder>:<expires_at_ms>;" each, on the
-- server's clock. A fence is live while one of its holders is.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function holders(v)
  local hs = {}
  for id, exp in string.gmatch(string.sub(v, 18), '(%x+):(%d+);') do
    hs[id] = tonumber(exp)
  end
  return hs
end

local function live(hs, now)
  for _, exp in pairs(hs) do
    if exp > now then return true end
  end
  return false
end

-- The fence's bytes: the head and its live holders, in a fixed order.
local function fence(head, hs, now)
  local ids = {}
  for id, exp in pairs(hs) do
    if exp > now then ids[#ids + 1] = id end
  end
  table.sort(ids)
  local parts = {head}
  for _, id in ipairs(ids) do
    parts[#parts + 1] = id .. ':' .. string.format('%d', hs[id]) .. ';'
  end
  return table.concat(parts)
end

-- SET, also when Redis is full (`maxmemory` under `noeviction`), where it
-- refuses a script's first write with OOM but never a DEL, and refuses a
-- script nothing once it has written: the key is deleted, then set. With
-- nothing to delete the key stays empty, which for a key that guards
-- stores (a tombstone, a generation, a token) is as safe as a new value (a
-- store needs exactly its lease or its generation there; see the README,
-- "When Redis forgets"), and is no fence: the callers that write a fence
-- fail instead, and the invalidation is queued. Returns true when set.
local function set_or_del(key, ...)
  local r = redis.pcall('SET', key, ...)
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'OOM', 1, true) then error(r) end
    if redis.call('DEL', key) == 0 then return false end
    redis.call('SET', key, ...)
  end
  return true
end

local function full()
  return redis.error_reply('OOM Redis is full: a fence cannot be written')
end

local function publish(channel, message)
  return type(redis.pcall('PUBLISH', channel, message)) ~= 'table'
end

-- An entry's bytes from the generation it is stored under and its tail,
-- whose expiry field (bytes 17 to 24) holds the TTL in ms: the entry gets
-- its end on the server's clock, so a writer's clock does not decide when
-- its entries expire. `magic`: '\206' for an entry with deps (see
-- `entry/mod.rs`), else '\202'.
local function entry_bytes(g, tail, magic)
  local ttl = 0
  for i = 17, 24 do ttl = ttl * 256 + string.byte(tail, i) end
  local ends = now_ms() + ttl
  local be = {}
  for i = 8, 1, -1 do
    be[i] = string.char(ends % 256)
    ends = math.floor(ends / 256)
  end
  return (magic or '\202') .. string.sub(g, 1, 16) .. string.sub(tail, 1, 16) .. table.concat(be) .. string.sub(tail, 25)
end
