-- Atomic check-and-consume of every window of one or more subjects: `grant` in limits/mod.rs in
-- Lua (both are held to the same tests). Data planes batch concurrent requests into one call;
-- each subject is still decided atomically and in order, and a refusal changes nothing.
-- KEYS[i]  subject i's state: "tat dp dc mp mc" (GCRA arrival time, day id and count, month id
--          and count) in one string, so a decision is one GET and one SET
-- ARGV     12 values per subject: now_us, interval_us, burst, day_limit (0 = none), day_id,
--          day_end_us, month_limit (0 = none), month_id, month_end_us, want, share_div (0 = no cap),
--          refund (unspent requests of an expired lease, given back first)
-- Returns  6 values per subject: granted, then tat, dp, dc, mp, mc as they were BEFORE its grant.
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 12
  local now = tonumber(ARGV[a + 1])
  local interval = tonumber(ARGV[a + 2])
  local burst = tonumber(ARGV[a + 3])
  local day_limit = tonumber(ARGV[a + 4])
  local day_id = tonumber(ARGV[a + 5])
  local day_end = tonumber(ARGV[a + 6])
  local month_limit = tonumber(ARGV[a + 7])
  local month_id = tonumber(ARGV[a + 8])
  local month_end = tonumber(ARGV[a + 9])
  local want = tonumber(ARGV[a + 10])
  local share_div = tonumber(ARGV[a + 11])
  local refund = tonumber(ARGV[a + 12])

  local tat0, dp0, dc0, mp0, mc0 = 0, 0, 0, 0, 0
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local a1, a2, a3, a4, a5 = string.match(stored, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
    if a1 then
      tat0, dp0, dc0, mp0, mc0 = tonumber(a1), tonumber(a2), tonumber(a3), tonumber(a4), tonumber(a5)
    end
  end

  local tat = math.max(tat0 - refund * interval, now)
  local avail = math.floor((now + burst * interval - tat) / interval)
  if avail < 0 then avail = 0 end
  local dc = 0
  if day_limit > 0 and dp0 == day_id then dc = math.max(dc0 - refund, 0) end
  local mc = 0
  if month_limit > 0 and mp0 == month_id then mc = math.max(mc0 - refund, 0) end
  if day_limit > 0 then avail = math.min(avail, math.max(day_limit - dc, 0)) end
  if month_limit > 0 then avail = math.min(avail, math.max(month_limit - mc, 0)) end
  local granted = math.min(want, avail)
  if share_div > 0 then granted = math.min(granted, math.max(math.floor(avail / share_div), 1)) end

  if granted > 0 or refund > 0 then
    local new_tat = tat + granted * interval
    local until_us = new_tat
    if day_limit > 0 and day_end > until_us then until_us = day_end end
    if month_limit > 0 and month_end > until_us then until_us = month_end end
    local state = string.format('%.0f %.0f %.0f %.0f %.0f', new_tat,
      day_limit > 0 and day_id or 0, dc + granted, month_limit > 0 and month_id or 0, mc + granted)
    redis.call('SET', KEYS[i], state, 'PX', math.ceil((until_us - now) / 1000) + 1000)
  end
  local o = (i - 1) * 6
  out[o + 1] = granted
  out[o + 2] = tat0
  out[o + 3] = dp0
  out[o + 4] = dc0
  out[o + 5] = mp0
  out[o + 6] = mc0
end
return out
