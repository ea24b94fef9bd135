-- Read only: each rate scope's figures as they stand, nothing taken (for a refusal no wait helps, a prompt
-- over a tpm cap, which still reports what the levels have left).
-- KEYS: 2 per rate scope (requests hash, tokens hash, as enter.lua names them). ARGV: per scope rpm, tpm.
-- Returns per scope: lim_r, rem_r, reset_r, lim_t, rem_t, reset_t (-1 and '0': no such cap); a reset is the
-- seconds until the oldest count still in the window leaves it ('0': the window is empty).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local sec = math.floor(now)

local function figures(key, cap)
  if cap <= 0 then return -1, -1, '0' end
  local raw = redis.call('HGETALL', key)
  local used, oldest = 0, nil
  for i = 1, #raw, 2 do
    local s, c = tonumber(raw[i]), tonumber(raw[i + 1])
    if s > sec - 60 then
      used = used + c
      if c > 0 and (oldest == nil or s < oldest) then oldest = s end
    end
  end
  local reset = '0'
  if oldest then reset = tostring(math.max(0, oldest + 60 - now)) end
  return cap, math.max(0, cap - used), reset
end

local out = {}
for i = 0, #KEYS / 2 - 1 do
  local lr, rr, sr = figures(KEYS[i * 2 + 1], tonumber(ARGV[i * 2 + 1]))
  local lt, rt, st = figures(KEYS[i * 2 + 2], tonumber(ARGV[i * 2 + 2]))
  for _, v in ipairs({lr, rr, sr, lt, rt, st}) do out[#out + 1] = v end
end
return out
