-- One atomic check-and-consume of every window of a subject (see `decide` in limits/mod.rs, of
-- which this is a transcription; both are held to the same tests).
-- KEYS[1]  the subject's state hash: tat, dp (day id), dc, mp (month id), mc
-- ARGV     now_us, interval_us, burst, day_limit (0 = none), day_id, day_end_us,
--          month_limit (0 = none), month_id, month_end_us
-- Returns  {allowed (1/0), tat, dp, dc, mp, mc} with the state as it was BEFORE this request.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local day_limit = tonumber(ARGV[4])
local day_id = tonumber(ARGV[5])
local day_end = tonumber(ARGV[6])
local month_limit = tonumber(ARGV[7])
local month_id = tonumber(ARGV[8])
local month_end = tonumber(ARGV[9])

local s = redis.call('HMGET', KEYS[1], 'tat', 'dp', 'dc', 'mp', 'mc')
local tat0 = tonumber(s[1]) or 0
local dp0 = tonumber(s[2]) or 0
local dc0 = tonumber(s[3]) or 0
local mp0 = tonumber(s[4]) or 0
local mc0 = tonumber(s[5]) or 0

local tat = math.max(tat0, now)
local new_tat = tat + interval
local allowed = (new_tat - burst * interval - now) <= 0
local dc = 0
if day_limit > 0 and dp0 == day_id then dc = dc0 end
local mc = 0
if month_limit > 0 and mp0 == month_id then mc = mc0 end
if day_limit > 0 and dc >= day_limit then allowed = false end
if month_limit > 0 and mc >= month_limit then allowed = false end

if allowed then
  local until_us = new_tat
  if day_limit > 0 and day_end > until_us then until_us = day_end end
  if month_limit > 0 and month_end > until_us then until_us = month_end end
  local fmt = '%.0f'
  redis.call('HSET', KEYS[1],
    'tat', string.format(fmt, new_tat),
    'dp', string.format(fmt, day_limit > 0 and day_id or 0), 'dc', string.format(fmt, dc + 1),
    'mp', string.format(fmt, month_limit > 0 and month_id or 0), 'mc', string.format(fmt, mc + 1))
  redis.call('PEXPIRE', KEYS[1], math.ceil((until_us - now) / 1000) + 1000)
end
return {allowed and 1 or 0, tat0, dp0, dc0, mp0, mc0}
