-- After a call, in one step: settle the token estimate to the real count and leave
-- the in-flight sets (rate scopes); replace the call's lease by its real cost and
-- report budget thresholds crossed for the first time in their window (budget
-- scopes; each fires once per window, across replicas).
-- KEYS: 3 per rate scope (requests hash, tokens hash, in-flight zset), then per budget scope:
--       settled, reserved, leases (see enter.lua), the budget amount's "armed" mark (set by reached.lua
--       when the budget changed mid-window), and one alert mark per threshold (and budget amount).
-- ARGV: slot, token_delta, taken_at (the second enter put the estimate in), request_back (1: the call
--       was refused after enter, e.g. every deployment full: its request leaves taken_at's bucket), n_rate,
--       per rate scope: tpm (0 = none),
--       reserved_nano (the lease's amount), actual_nano, n_thresholds, thresholds...,
--       per budget scope: limit, ttl_s (0 = keep).
-- Only a lease still there is settled: a live one stops counting and its call's cost is
-- added to the settled spend; an expired one (its marker, no longer counted) adds the cost
-- only; none (settled already) changes nothing, so a settle that comes twice counts once.
-- A refund (token_delta < 0) goes back into the estimate's own second, or nowhere once
-- that second has left the window: put into the current second it would push a later
-- minute below zero. Tokens beyond the estimate were used now: the current second.
-- Returns the crossings as "budget_index:threshold" strings (their marks hold the slot).
local t = redis.call('TIME')
local sec = tonumber(t[1])
local rid, tokens, taken = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local back, nr = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 0, nr - 1 do
  local kr, kt, kp = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  if back > 0 and taken > sec - 60 then
    local had = tonumber(redis.call('HGET', kr, taken) or '0')
    if had > 0 then redis.call('HINCRBY', kr, taken, -1) end
  end
  if tonumber(ARGV[6 + i]) > 0 and tokens ~= 0 then
    if tokens > 0 then
      redis.call('HINCRBY', kt, sec, tokens)
      redis.call('EXPIRE', kt, 70)
    elseif taken > sec - 60 then
      local had = tonumber(redis.call('HGET', kt, taken) or '0')
      if had > 0 then redis.call('HINCRBY', kt, taken, math.max(tokens, -had)) end
    end
  end
  redis.call('ZREM', kp, rid)
end
local b = 6 + nr
local amount, actual, nt = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
local live, expired = amount .. ':' .. rid, 'e:' .. rid
local out = {}
local per = 4 + nt
for j = 1, (#KEYS - nr * 3) / per do
  local k = nr * 3 + (j - 1) * per
  local ks, kres, kl = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local found = redis.call('ZREM', kl, live) == 1
  if found then
    if redis.call('DECRBY', kres, amount) < 0 then redis.call('SET', kres, 0, 'KEEPTTL') end
  else
    found = redis.call('ZREM', kl, expired) == 1
  end
  if found then
    local limit = tonumber(ARGV[b + 2 + nt + j * 2 - 1])
    local ttl = tonumber(ARGV[b + 2 + nt + j * 2])
    -- alerts compare settled spend only (other calls' reservations are not spend), on crossing; once the
    -- budget changed mid-window (armed), on any threshold reached and not marked yet (calls still settling
    -- under the old amount may have passed it)
    local settled = redis.call('INCRBY', ks, actual)
    if ttl > 0 then redis.call('EXPIRE', ks, ttl) end
    local before = settled - actual
    local armed = nil
    for i = 1, nt do
      local th = ARGV[b + 2 + i]
      local mark = tonumber(th) * limit
      if limit > 0 and settled >= mark and before >= mark and armed == nil then
        armed = redis.call('EXISTS', KEYS[k + 4]) == 1
      end
      if limit > 0 and settled >= mark and (before < mark or armed) then
        -- valued with the slot: a settle whose answer was lost finds its own marks (alert_marks.py)
        if redis.call('SET', KEYS[k + 4 + i], rid, 'NX', 'EX', ttl > 0 and ttl or 31536000) then
          out[#out + 1] = (j - 1) .. ':' .. th
        end
      end
    end
  end
end
return out
