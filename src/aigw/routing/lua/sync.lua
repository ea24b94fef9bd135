-- One replica's periodic exchange for every deployment: push its in-flight count, latency
-- averages, successful calls, requests and tokens; read back the breaker verdict and
-- everyone's numbers.
-- KEYS: 4 per deployment: breaker hash, window hash, replicas hash, quota hash
-- ARGV: replica, stale_ms, window_ms, ttl_ms, then 7 per deployment:
--       inflight, latency_us (-1 = none), ttft_us (-1), calls, requests, tokens, cool_ms (0 = none)
-- Returns {now_ms, then 11 per deployment: state, until_ms, gen, others_inflight, latency_us,
--          ttft_us, rpm_used, tpm_used, cool_until_ms, window_calls, window_failures}
local replica, stale = ARGV[1], tonumber(ARGV[2])
local window_ms, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local b = math.floor(now / (window_ms / 10))
local minute = math.floor(now / 60000)
local frac = (now % 60000) / 60000
local out = {now}

local function mean(sum, n)
  if n == 0 then return -1 end
  return math.floor(sum / n)
end

for i = 0, #KEYS / 4 - 1 do
  local cb, win, reps, quota = KEYS[i * 4 + 1], KEYS[i * 4 + 2], KEYS[i * 4 + 3], KEYS[i * 4 + 4]
  local a = 4 + i * 7
  local inflight, lat, ttft = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local calls, reqs, toks, cool = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]),
                                   tonumber(ARGV[a + 7])

  local cur = redis.call('HMGET', cb, 'state', 'until', 'gen', 'cool')
  local state = cur[1] or 'closed'
  local until_ms, gen = tonumber(cur[2]) or 0, tonumber(cur[3]) or 0
  local cool_until = tonumber(cur[4]) or 0
  if cool > 0 and now + cool > cool_until then
    cool_until = now + cool
    redis.call('HSET', cb, 'cool', cool_until)
    redis.call('PEXPIRE', cb, ttl)
  end
  if calls > 0 and state == 'closed' then
    redis.call('HINCRBY', win, 'c' .. b, calls)
    redis.call('PEXPIRE', win, window_ms * 2)
  end
  local wc, wf = window_totals(win, b - 10)

  redis.call('HSET', reps, replica, inflight .. ',' .. lat .. ',' .. ttft .. ',' .. now)
  redis.call('PEXPIRE', reps, ttl)
  local others, lsum, ln, tsum, tn = 0, 0, 0, 0, 0
  local flat = redis.call('HGETALL', reps)
  for j = 1, #flat, 2 do
    local ri, rl, rt, ts = string.match(flat[j + 1], '^(-?%d+),(-?%d+),(-?%d+),(%d+)$')
    if ts == nil or tonumber(ts) < now - stale then
      redis.call('HDEL', reps, flat[j])
    else
      if flat[j] ~= replica then others = others + tonumber(ri) end
      if tonumber(rl) >= 0 then lsum, ln = lsum + tonumber(rl), ln + 1 end
      if tonumber(rt) >= 0 then tsum, tn = tsum + tonumber(rt), tn + 1 end
    end
  end

  if reqs > 0 then redis.call('HINCRBY', quota, 'r' .. minute, reqs) end
  if toks > 0 then redis.call('HINCRBY', quota, 't' .. minute, toks) end
  local q = redis.call('HMGET', quota, 'r' .. minute, 'r' .. (minute - 1), 't' .. minute, 't' .. (minute - 1))
  redis.call('HDEL', quota, 'r' .. (minute - 2), 't' .. (minute - 2))
  redis.call('PEXPIRE', quota, 180000)
  local rpm = (tonumber(q[2]) or 0) * (1 - frac) + (tonumber(q[1]) or 0)
  local tpm = (tonumber(q[4]) or 0) * (1 - frac) + (tonumber(q[3]) or 0)

  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = state, until_ms, gen, others
  out[n + 5], out[n + 6] = mean(lsum, ln), mean(tsum, tn)
  out[n + 7], out[n + 8], out[n + 9] = math.floor(rpm), math.floor(tpm), cool_until
  out[n + 10], out[n + 11] = wc, wf
end
return out
