-- Start counters from the ledger's totals where Redis has none (after a Redis loss).
-- KEYS: spend counters. ARGV: per key value and ttl_s.
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[i * 2])
  if ttl > 0 then
    redis.call('SET', KEYS[i], ARGV[i * 2 - 1], 'NX', 'EX', ttl)
  else
    redis.call('SET', KEYS[i], ARGV[i * 2 - 1], 'NX')
  end
end
return 1
