-- Replace a reservation by the real cost, and report budget thresholds crossed
-- for the first time in this window (each fires once per window, across replicas).
-- KEYS: one spend counter per scope. ARGV: delta, n_thresholds, thresholds...,
-- then per scope limit and ttl_s. Returns the indexes as "scope:threshold" strings.
local delta = tonumber(ARGV[1])
local nt = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + nt + (i - 1) * 2 + 1])
  local ttl = tonumber(ARGV[2 + nt + (i - 1) * 2 + 2])
  local spent = redis.call('INCRBY', KEYS[i], delta)
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  for j = 1, nt do
    local th = tonumber(ARGV[2 + j])
    if limit > 0 and spent >= th * limit then
      local flag = KEYS[i] .. ':alert:' .. ARGV[2 + j]
      if redis.call('SET', flag, '1', 'NX', 'EX', ttl > 0 and ttl or 31536000) then
        out[#out + 1] = (i - 1) .. ':' .. ARGV[2 + j]
      end
    end
  end
end
return out
