-- Before a call, in one atomic step: rate limits (rpm, tpm, parallel) for the rate
-- scopes, then a budget reservation for the budget scopes.
-- KEYS: 3 per rate scope (requests hash, tokens hash, in-flight zset), then 3 per budget
--       scope and window: settled spend (nano-dollars), reserved (the sum of the leases'
--       amounts) and leases (zset "<amount>:<slot>" -> expiry).
-- ARGV: slot (the call's in-flight id, made by the gateway), est_tokens, ttl_s (of an in-flight
--       slot and of a budget lease), n_rate, per rate scope: rpm, tpm, max_parallel (0 = none),
--       amount, per budget scope: limit.
-- A reservation is a lease on the slot that expires ttl_s after it was taken: a call whose
-- settle never comes (its reply was lost, its replica died) stops counting then. An expired
-- lease is dropped by the next reservation in its window (only then are leases walked: the
-- common case reads the earliest expiry only) and leaves a marker "e:<slot>" for one more
-- ttl_s, so that a late settle counts the call's real cost, once (leave.lua).
-- Rate windows are per-second buckets over the last 60 s of the server's clock,
-- so every replica sees one clock. Returns
--   {1, lim_r, rem_r, lim_t, rem_t, sec, reset_r, reset_t}                   admitted, reserved
--   {0, index, reason, retry_after_s, lim_r, rem_r, lim_t, rem_t, reset_r, reset_t}  a rate limit refused
--   {2, index, limit, spent, lim_r, rem_r, lim_t, rem_t, sec, reset_r, reset_t}  rates taken, the budget refused
-- (sec: the second that took the estimate, which leave.lua refunds into. The figures are, for requests and
-- for tokens, of the level with the fewest left; on a refusal, nothing taken, the refusing level's for what
-- it refused. reset_r, reset_t: admitted, seconds until the oldest counted request, tokens, of the level
-- reported leave its window; refused, until that level lets one more request, this estimate, through.
-- reset_t came last, after reset_r: each reply only grew at its end, and a changed script has a new SHA.)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local sec = math.floor(now)
local rid, est, ttl, nr = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local function window(key)
  local raw = redis.call('HGETALL', key)
  local used, items, stale = 0, {}, {}
  for i = 1, #raw, 2 do
    local s, c = tonumber(raw[i]), tonumber(raw[i + 1])
    if s <= sec - 60 then stale[#stale + 1] = raw[i] else used = used + c; items[#items + 1] = {s, c} end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(items, function(a, b) return a[1] < b[1] end)
  return used, items
end

local function wait(items, used, need, cap)
  local freed = 0
  for _, it in ipairs(items) do
    freed = freed + it[2]
    if used - freed + need <= cap then return math.max(0, it[1] + 60 - now) end
  end
  return 60
end

-- when the oldest count in the window leaves it (a bucket refunded to nothing frees nothing); this call's
-- own count, taken in this second, if there is no other
local function frees(items, mine)
  for _, it in ipairs(items) do
    if it[2] > 0 then return tostring(math.max(0, it[1] + 60 - now)) end
  end
  if mine then return tostring(60 - (now - sec)) end
  return '0'
end

-- A refusal (the cold path, nothing taken): every figure an accepted call carries, not only the refusing
-- level's. For requests and for tokens the level with the fewest left (the refusing one for what it refused)
-- and when it lets one more request (this estimate) through, '0' when it would now.
-- The refusal is the level (and measure) that lets the call through last, not merely the first that refused (its
-- wait is the Retry-After: a client told the key's wait found the project's window still full); the first on a tie.
local function refusal(at, reason, waited)
  local longest = tonumber(waited)
  for i = 0, nr - 1 do
    local rpm, tpm, par = tonumber(ARGV[5 + i * 3]), tonumber(ARGV[6 + i * 3]), tonumber(ARGV[7 + i * 3])
    if rpm > 0 then
      local used, items = window(KEYS[i * 3 + 1])
      if used + 1 > rpm then
        local w = wait(items, used, 1, rpm)
        if w > longest then at, reason, longest = i, 'rpm', w end
      end
    end
    if tpm > 0 then
      local used, items = window(KEYS[i * 3 + 2])
      if used + est > tpm then
        local w = wait(items, used, est, tpm)
        if w > longest then at, reason, longest = i, 'tpm', w end
      end
    end
    if par > 0 and 1 > longest and redis.call('ZCOUNT', KEYS[i * 3 + 3], '(' .. now, '+inf') >= par then
      at, reason, longest = i, 'parallel', 1
    end
  end
  if longest > tonumber(waited) then waited = tostring(longest) end
  local r, t = {-1, -1, '0'}, {-1, -1, '0'}
  for i = 0, nr - 1 do
    local rpm, tpm = tonumber(ARGV[5 + i * 3]), tonumber(ARGV[6 + i * 3])
    if rpm > 0 and (reason ~= 'rpm' or i == at) then
      local used, items = window(KEYS[i * 3 + 1])
      if r[1] < 0 or rpm - used - 1 < r[2] then
        r[1], r[2], r[3] = rpm, rpm - used - 1, '0'
        if reason == 'rpm' then r[3] = waited elseif used + 1 > rpm then r[3] = tostring(wait(items, used, 1, rpm)) end
      end
    end
    if tpm > 0 and (reason ~= 'tpm' or i == at) then
      local used, items = window(KEYS[i * 3 + 2])
      if t[1] < 0 or tpm - used - est < t[2] then
        t[1], t[2], t[3] = tpm, tpm - used - est, '0'
        if reason == 'tpm' then t[3] = waited elseif used + est > tpm then t[3] = tostring(wait(items, used, est, tpm)) end
      end
    end
  end
  if r[1] >= 0 then r[2] = math.max(0, r[2]) end
  if t[1] >= 0 then t[2] = math.max(0, t[2]) end
  return {0, at, reason, waited, r[1], r[2], t[1], t[2], r[3], t[3]}
end

local head = {-1, -1, -1, -1, '0', '0'}
for i = 0, nr - 1 do
  local rpm, tpm, par = tonumber(ARGV[5 + i * 3]), tonumber(ARGV[6 + i * 3]), tonumber(ARGV[7 + i * 3])
  local kr, kt, kp = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local info = {-1, -1, -1, -1}
  local ritems, titems
  if rpm > 0 then
    local used, items = window(kr)
    if used + 1 > rpm then return refusal(i, 'rpm', tostring(wait(items, used, 1, rpm))) end
    info[1], info[2], ritems = rpm, rpm - used - 1, items
  end
  if tpm > 0 then
    local used, items = window(kt)
    if used + est > tpm then return refusal(i, 'tpm', tostring(wait(items, used, est, tpm))) end
    info[3], info[4], titems = tpm, tpm - used - est, items
  end
  if par > 0 then
    redis.call('ZREMRANGEBYSCORE', kp, '-inf', now)
    if redis.call('ZCARD', kp) >= par then return refusal(i, 'parallel', '1') end
  end
  -- the figures of the level with the least left, for requests and for tokens (the earliest on a tie)
  if info[1] >= 0 and (head[1] < 0 or info[2] < head[2]) then
    head[1], head[2], head[5] = info[1], info[2], frees(ritems, true)
  end
  if info[3] >= 0 and (head[3] < 0 or info[4] < head[4]) then
    head[3], head[4], head[6] = info[3], info[4], frees(titems, est > 0)
  end
end
for i = 0, nr - 1 do
  local rpm, tpm, par = tonumber(ARGV[5 + i * 3]), tonumber(ARGV[6 + i * 3]), tonumber(ARGV[7 + i * 3])
  local kr, kt, kp = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  if rpm > 0 then redis.call('HINCRBY', kr, sec, 1); redis.call('EXPIRE', kr, 70) end
  if tpm > 0 and est > 0 then redis.call('HINCRBY', kt, sec, est); redis.call('EXPIRE', kt, 70) end
  if par > 0 then redis.call('ZADD', kp, now + ttl, rid); redis.call('EXPIRE', kp, math.ceil(ttl) + 10) end
end

local b = 5 + nr * 3
local amount = tonumber(ARGV[b])
-- the lease keys outlive every lease and its marker (a marker lasts one more ttl: a late settle finds it)
local keep = math.ceil(2 * ttl) + 10

local function expire(kl)
  -- the leases past their expiry count no more (each leaves a marker); markers past theirs go.
  -- Returns the amount freed.
  local freed = 0
  while true do
    local dead = redis.call('ZRANGEBYSCORE', kl, '-inf', now, 'LIMIT', 0, 200)
    if #dead == 0 then return freed end
    local marks = {}
    for _, m in ipairs(dead) do
      local a, slot = string.match(m, '^(%d+):(.*)$')
      if a then
        freed = freed + tonumber(a)
        marks[#marks + 1] = now + ttl
        marks[#marks + 1] = 'e:' .. slot
      end
    end
    redis.call('ZREM', kl, unpack(dead))
    if #marks > 0 then redis.call('ZADD', kl, unpack(marks)) end
  end
end

local nb = (#KEYS - nr * 3) / 3
local reserved = {}
for j = 1, nb do
  local k = nr * 3 + (j - 1) * 3
  local limit = tonumber(ARGV[b + j])
  local got = redis.call('MGET', KEYS[k + 1], KEYS[k + 2])
  local settled, held = tonumber(got[1] or '0'), math.max(0, tonumber(got[2] or '0'))
  local first = redis.call('ZRANGE', KEYS[k + 3], 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now then
    held = math.max(0, held - expire(KEYS[k + 3]))
    redis.call('SET', KEYS[k + 2], held, 'EX', keep)
    redis.call('EXPIRE', KEYS[k + 3], keep)
  end
  if settled + held + amount > limit then
    return {2, j - 1, tostring(limit), tostring(settled + held), head[1], head[2], head[3], head[4], sec, head[5],
            head[6]}
  end
  reserved[j] = held
end
local lease = ARGV[b] .. ':' .. rid  -- the amount as the gateway wrote it: leave.lua names it so
for j = 1, nb do
  local k = nr * 3 + (j - 1) * 3
  redis.call('SET', KEYS[k + 2], reserved[j] + amount, 'EX', keep)
  redis.call('ZADD', KEYS[k + 3], now + ttl, lease)
  redis.call('EXPIRE', KEYS[k + 3], keep)
end
return {1, head[1], head[2], head[3], head[4], sec, head[5], head[6]}
