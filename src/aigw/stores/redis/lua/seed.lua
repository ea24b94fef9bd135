-- Raise settled spend to the ledger's totals (a Redis loss, a restart, a budget added or
-- changed mid-window): the higher figure wins, so spend made while no budget counted it is in,
-- and thresholds passed before do not alert again. Leases (calls in flight, see enter.lua) are
-- not in the ledger: they stay as they are.
-- KEYS: settled-spend counters. ARGV: per key its value and ttl_s (0 = keep).
for i = 1, #KEYS do
  local value, ttl = tonumber(ARGV[i * 2 - 1]), tonumber(ARGV[i * 2])
  if tonumber(redis.call('GET', KEYS[i]) or '-1') < value then
    if ttl > 0 then
      redis.call('SET', KEYS[i], value, 'EX', ttl)
    else
      redis.call('SET', KEYS[i], value)
    end
  end
end
return 1
