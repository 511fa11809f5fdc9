-- One atomic check-and-consume of every window of a subject: `grant` in limits/mod.rs in Lua (both
-- are held to the same tests). Grants up to `want` requests at once (1 for a single request, more
-- for a fast-mode lease); a refusal changes nothing.
-- KEYS[1]  the subject's state hash: tat, dp (day id), dc, mp (month id), mc
-- ARGV     now_us, interval_us, burst, day_limit (0 = none), day_id, day_end_us,
--          month_limit (0 = none), month_id, month_end_us, want, share_div (0 = no cap)
-- Returns  {granted, tat, dp, dc, mp, mc} with the state as it was BEFORE this call.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local day_limit = tonumber(ARGV[4])
local day_id = tonumber(ARGV[5])
local day_end = tonumber(ARGV[6])
local month_limit = tonumber(ARGV[7])
local month_id = tonumber(ARGV[8])
local month_end = tonumber(ARGV[9])
local want = tonumber(ARGV[10])
local share_div = tonumber(ARGV[11])

local s = redis.call('HMGET', KEYS[1], 'tat', 'dp', 'dc', 'mp', 'mc')
local tat0 = tonumber(s[1]) or 0
local dp0 = tonumber(s[2]) or 0
local dc0 = tonumber(s[3]) or 0
local mp0 = tonumber(s[4]) or 0
local mc0 = tonumber(s[5]) or 0

local tat = math.max(tat0, now)
local avail = math.floor((now + burst * interval - tat) / interval)
if avail < 0 then avail = 0 end
local dc = 0
if day_limit > 0 and dp0 == day_id then dc = dc0 end
local mc = 0
if month_limit > 0 and mp0 == month_id then mc = mc0 end
if day_limit > 0 then avail = math.min(avail, math.max(day_limit - dc, 0)) end
if month_limit > 0 then avail = math.min(avail, math.max(month_limit - mc, 0)) end
local granted = math.min(want, avail)
if share_div > 0 then granted = math.min(granted, math.max(math.floor(avail / share_div), 1)) end

if granted > 0 then
  local new_tat = tat + granted * interval
  local until_us = new_tat
  if day_limit > 0 and day_end > until_us then until_us = day_end end
  if month_limit > 0 and month_end > until_us then until_us = month_end end
  local fmt = '%.0f'
  redis.call('HSET', KEYS[1],
    'tat', string.format(fmt, new_tat),
    'dp', string.format(fmt, day_limit > 0 and day_id or 0), 'dc', string.format(fmt, dc + granted),
    'mp', string.format(fmt, month_limit > 0 and month_id or 0), 'mc', string.format(fmt, mc + granted))
  redis.call('PEXPIRE', KEYS[1], math.ceil((until_us - now) / 1000) + 1000)
end
return {granted, tat0, dp0, dc0, mp0, mc0}
