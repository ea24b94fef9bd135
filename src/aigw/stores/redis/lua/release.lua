-- After a call: settle the token estimate to the real count and leave the in-flight set.
-- KEYS: per scope 2 keys: tokens hash, in-flight zset. ARGV: request_id, token_delta,
-- then per scope tpm (0 = none).
local t = redis.call('TIME')
local sec = tonumber(t[1])
local rid, delta = ARGV[1], tonumber(ARGV[2])
for i = 0, #KEYS / 2 - 1 do
  local kt, kp = KEYS[i * 2 + 1], KEYS[i * 2 + 2]
  if tonumber(ARGV[3 + i]) > 0 and delta ~= 0 then
    redis.call('HINCRBY', kt, sec, delta)
    redis.call('EXPIRE', kt, 70)
  end
  redis.call('ZREM', kp, rid)
end
return 1
