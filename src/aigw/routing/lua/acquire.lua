-- Take one of a half-open breaker's trial permits, shared by every replica.
-- KEYS: breaker hash;  ARGV: half_open_calls, lease_ms (a permit lost with its replica frees itself)
-- Returns {granted (2 = closed, no trial needed; 1 = trial; 0 = no), state, until_ms, gen, now_ms, lease}
-- (gen and lease name the permit: it can be given back only while both are still the breaker's)
local now = now_ms()
local cur = redis.call('HMGET', KEYS[1], 'state', 'until', 'gen', 'trials', 'lease')
local state = cur[1] or 'closed'
local until_ms = tonumber(cur[2]) or 0
local gen = tonumber(cur[3]) or 0
if state ~= 'open' then return {2, state, until_ms, gen, now} end
if now < until_ms then return {0, state, until_ms, gen, now} end
local trials = tonumber(cur[4]) or 0
local lease = tonumber(cur[5]) or 0
if lease < now then trials = 0 end
if trials >= tonumber(ARGV[1]) then return {0, state, until_ms, gen, now} end
trials = trials + 1
if trials == 1 then lease = now + tonumber(ARGV[2]) end
redis.call('HSET', KEYS[1], 'trials', trials, 'lease', lease)
return {1, state, until_ms, gen, now, lease}
