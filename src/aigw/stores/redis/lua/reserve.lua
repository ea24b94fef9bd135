-- Reserve a worst-case cost against every budget at once, or against none.
-- KEYS: one spend counter per scope (nano-dollars, one key per budget window).
-- ARGV: amount, then per scope limit and ttl_s (0 = keep).
-- Returns {1} or {0, scope_index, limit, spent}.
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[i * 2])
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spent + amount > limit then
    return {0, i - 1, tostring(limit), tostring(spent)}
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[i * 2 + 1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return {1}
