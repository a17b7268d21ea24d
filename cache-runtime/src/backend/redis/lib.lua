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

local function publish(channel, message)
  return type(redis.pcall('PUBLISH', channel, message)) ~= 'table'
end
