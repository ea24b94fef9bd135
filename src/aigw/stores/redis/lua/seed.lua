-- Start counters from the ledger's totals where Redis has none (after a Redis loss).
-- KEYS: spend counters. ARGV: per key value and ttl_s. Each counter's settled-only twin
-- (what alerts compare, see leave.lua) starts from the same total.
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[i * 2])
  for _, key in ipairs({KEYS[i], KEYS[i] .. ':settled'}) do
    if ttl > 0 then
      redis.call('SET', key, ARGV[i * 2 - 1], 'NX', 'EX', ttl)
    else
      redis.call('SET', key, ARGV[i * 2 - 1], 'NX')
    end
  end
end
return 1
