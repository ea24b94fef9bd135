-- A budget changed mid-window (admin API): the thresholds of its new amount that settled spend has
-- reached, not marked yet, are marked now (SET NX: once across replicas) and returned, to alert. The
-- amount's "armed" mark makes later settles (leave.lua) alert any other threshold reached and not
-- marked, not only one they cross: calls in flight settle under the old amount meanwhile.
-- KEYS: settled, the amount's armed mark, then one alert mark per threshold (as leave.lua names them).
-- ARGV: limit (nano-dollars), ttl_s (0 = keep), thresholds...
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep = ttl > 0 and ttl or 31536000
redis.call('SET', KEYS[2], 1, 'EX', keep)
local settled = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for i = 3, #ARGV do
  if limit > 0 and settled >= tonumber(ARGV[i]) * limit then
    if redis.call('SET', KEYS[i], 'change', 'NX', 'EX', keep) then out[#out + 1] = ARGV[i] end
  end
end
return out
