-- Record a failure and/or a breaker event for one deployment; open the breaker when
-- the shared window crosses the threshold.
-- KEYS: breaker hash, window hash
-- ARGV: fails, outcome ('' | trial_ok | trial_fail | trial_release | trip | probe_ok), failures, window_ms,
--       error_ratio (0 = off), min_calls, cooldown_ms, ttl_ms, for trial_release the permit's gen and lease,
--       kinds: a failure's dead kind (kept as field 'dead:<kind>' = when, for the probes of every replica); for
--       probe_ok the dead kinds the probe did not show gone (one seen since a window before the breaker opened
--       keeps its cooldown); for trial_ok those to forget (comma-separated)
-- Returns {state, until_ms, gen, now_ms}
local cb, win = KEYS[1], KEYS[2]
local fails, outcome = tonumber(ARGV[1]), ARGV[2]
local threshold, window_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local ratio, min_calls = tonumber(ARGV[5]), tonumber(ARGV[6])
local cooldown, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local kinds = ARGV[11] or ''
local now = now_ms()
local cur = redis.call('HMGET', cb, 'state', 'until', 'gen')
local state = cur[1] or 'closed'
local until_ms = tonumber(cur[2]) or 0
local gen = tonumber(cur[3]) or 0

if fails > 0 and kinds ~= '' then
  redis.call('HSET', cb, 'dead:' .. kinds, now)
  redis.call('PEXPIRE', cb, ttl)
end

local function open_it()
  state, until_ms, gen = 'open', now + cooldown, gen + 1
  set_state(cb, state, until_ms, gen, ttl)
  redis.call('DEL', win)
end

if outcome == 'trial_ok' then
  if state == 'open' then
    state, until_ms, gen = 'closed', 0, gen + 1
    set_state(cb, state, until_ms, gen, ttl)
    redis.call('DEL', win)
    for kind in string.gmatch(kinds, '[^,]+') do redis.call('HDEL', cb, 'dead:' .. kind) end
  end
elseif outcome == 'trial_fail' then
  if state == 'open' and now >= until_ms then open_it() end
elseif outcome == 'trial_release' then
  -- a trial permit given back unused (the call was never made): another replica may take it. Only a
  -- permit of the breaker's current half-open period and lease: an older one is void already, and
  -- taking one back from the count now would free a permit another trial holds
  local held = redis.call('HMGET', cb, 'trials', 'lease')
  local trials, lease = tonumber(held[1]) or 0, tonumber(held[2]) or 0
  if trials > 0 and tonumber(ARGV[9]) == gen and tonumber(ARGV[10]) == lease and lease >= now then
    redis.call('HSET', cb, 'trials', trials - 1)
  end
elseif outcome == 'probe_ok' then
  local shown = true
  for kind in string.gmatch(kinds, '[^,]+') do
    local at = tonumber(redis.call('HGET', cb, 'dead:' .. kind))
    if at and at >= until_ms - cooldown - window_ms then shown = false end
  end
  if shown and state == 'open' and now < until_ms then
    until_ms, gen = now, gen + 1  -- a new verdict: every replica adopts it (half-open now) at its next sync
    redis.call('HSET', cb, 'until', until_ms, 'gen', gen)
  end
elseif outcome == 'trip' and state ~= 'open' then
  open_it()
end

if fails > 0 and state == 'closed' then
  local b = math.floor(now / (window_ms / 10))
  redis.call('HINCRBY', win, 'c' .. b, fails)
  redis.call('HINCRBY', win, 'f' .. b, fails)
  redis.call('PEXPIRE', win, window_ms * 2)
  local calls, failed = window_totals(win, b - 10)
  if failed >= threshold or (ratio > 0 and calls >= min_calls and failed >= ratio * calls) then
    open_it()
  end
end
return {state, until_ms, gen, now}
