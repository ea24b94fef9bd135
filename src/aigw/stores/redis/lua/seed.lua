-- Raise counters to the ledger's totals (a Redis loss, a restart, a budget added or changed
-- mid-window): the higher figure wins, so reservations in flight stay and spend made while no
-- budget counted it is in. KEYS: spend counters. ARGV: per key value and ttl_s. Each counter's
-- settled-only twin (what alerts compare, see leave.lua) is raised the same way.
for i = 1, #KEYS do
  local value, ttl = tonumber(ARGV[i * 2 - 1]), tonumber(ARGV[i * 2])
  for _, key in ipairs({KEYS[i], KEYS[i] .. ':settled'}) do
    if tonumber(redis.call('GET', key) or '-1') < value then
      if ttl > 0 then
        redis.call('SET', key, value, 'EX', ttl)
      else
        redis.call('SET', key, value)
      end
    end
  end
end
return 1
