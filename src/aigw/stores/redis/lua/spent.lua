-- What a budget window counts now: settled spend plus the live leases (see enter.lua), the
-- expired ones left out. Reads only. KEYS: settled, reserved, leases.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local spent = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(redis.call('GET', KEYS[2]) or '0')
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local a = string.match(m, '^(%d+):')
  if a then spent = spent - tonumber(a) end
end
return spent
