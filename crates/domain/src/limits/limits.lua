-- Atomic check-and-consume of every window of one or more subjects: `grant` in limits/mod.rs in
-- Lua (both are held to the same tests). Data planes batch concurrent requests into one call;
-- each subject is still decided atomically and in order, and a refusal changes nothing.
-- Numbers travel as little-endian doubles packed with Redis's `struct` library (exact for integers
-- below 2^53; times are in µs): no decimal parsing or formatting on the hot path.
-- KEYS[i]  subject i's state: tat, dp, dc, mp, mc, exp (GCRA arrival time, day id and count, month
--          id and count, when the key expires) as 6 doubles; the text form "tat dp dc mp mc" of
--          earlier versions is still read. The key lives a minute past what its windows need, so
--          most writes overwrite it in place (SETRANGE keeps the expiry) instead of SET ... PX,
--          which costs three times as much.
-- ARGV[i]  12 doubles: now_us, interval_us, burst, day_limit (0 = none), day_id, day_end_us,
--          month_limit (0 = none), month_id, month_end_us, want, share_div (0 = no cap), refund
--          (unspent requests of an expired lease, given back first)
-- Returns  one string: 6 doubles per subject, granted, then tat, dp, dc, mp, mc as they were
--          BEFORE its grant.
local unpack, pack = struct.unpack, struct.pack
local floor, max, min = math.floor, math.max, math.min
local out = {}
for i = 1, #KEYS do
  local now, interval, burst, day_limit, day_id, day_end, month_limit, month_id, month_end, want,
    share_div, refund = unpack('<dddddddddddd', ARGV[i])

  local tat0, dp0, dc0, mp0, mc0, exp0 = 0, 0, 0, 0, 0, 0
  local stored = redis.call('GET', KEYS[i])
  if stored then
    if #stored == 48 then
      tat0, dp0, dc0, mp0, mc0, exp0 = unpack('<dddddd', stored)
    else
      local a1, a2, a3, a4, a5 = string.match(stored, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
      if a1 then
        tat0, dp0, dc0, mp0, mc0 = tonumber(a1), tonumber(a2), tonumber(a3), tonumber(a4), tonumber(a5)
      end
    end
  end

  local tat = max(tat0 - refund * interval, now)
  local avail = floor((now + burst * interval - tat) / interval)
  if avail < 0 then avail = 0 end
  local dc = 0
  if day_limit > 0 and dp0 == day_id then dc = max(dc0 - refund, 0) end
  local mc = 0
  if month_limit > 0 and mp0 == month_id then mc = max(mc0 - refund, 0) end
  if day_limit > 0 then avail = min(avail, max(day_limit - dc, 0)) end
  if month_limit > 0 then avail = min(avail, max(month_limit - mc, 0)) end
  local granted = min(want, avail)
  if share_div > 0 then granted = min(granted, max(floor(avail / share_div), 1)) end

  if granted > 0 or refund > 0 then
    local new_tat = tat + granted * interval
    local until_us = new_tat
    if day_limit > 0 and day_end > until_us then until_us = day_end end
    if month_limit > 0 and month_end > until_us then until_us = month_end end
    local dp, mp = day_limit > 0 and day_id or 0, month_limit > 0 and month_id or 0
    if exp0 >= until_us + 1000000 then
      redis.call('SETRANGE', KEYS[i], 0, pack('<dddddd', new_tat, dp, dc + granted, mp, mc + granted, exp0))
    else
      local exp = until_us + 60000000
      redis.call('SET', KEYS[i], pack('<dddddd', new_tat, dp, dc + granted, mp, mc + granted, exp),
        'PX', math.ceil((exp - now) / 1000))
    end
  end
  out[i] = pack('<dddddd', granted, tat0, dp0, dc0, mp0, mc0)
end
return table.concat(out)
