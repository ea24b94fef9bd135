-- Helpers prepended to every routing script. Times are Redis's own clock (ms), so
-- replicas with skewed clocks still agree on when a breaker opened and cools down.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Sum the window's buckets newer than `oldest` ("c<bucket>" calls, "f<bucket>" failures); drop older ones.
local function window_totals(key, oldest)
  local flat = redis.call('HGETALL', key)
  local calls, fails = 0, 0
  for i = 1, #flat, 2 do
    local field = flat[i]
    if tonumber(string.sub(field, 2)) <= oldest then
      redis.call('HDEL', key, field)
    elseif string.sub(field, 1, 1) == 'c' then
      calls = calls + tonumber(flat[i + 1])
    else
      fails = fails + tonumber(flat[i + 1])
    end
  end
  return calls, fails
end

local function set_state(key, state, until_ms, gen, ttl)
  redis.call('HSET', key, 'state', state, 'until', until_ms, 'gen', gen, 'trials', 0, 'lease', 0)
  redis.call('PEXPIRE', key, ttl)
end
