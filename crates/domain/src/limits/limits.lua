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
-- ARGV[i]  16 doubles: now_us, interval_us, burst, day_limit (0 = none), day_id, day_end_us,
--          month_limit (0 = none), month_id, month_end_us, want, share_div (0 = no cap), refund
--          (unspent requests of an expired lease, given back first), more (1 when KEYS[i] is
--          asked again later in this call: its state is then carried, not written, until the last),
--          seeded (1: the next two are what the database holds), seed_dc, seed_mc
-- Returns  one string: 6 doubles per subject, granted, then tat, dp, dc, mp, mc as they were
--          BEFORE its grant. granted = -1: the subject has day or month windows and no state here
--          (Redis restarted without persistence, evicted it, or never saw it) and no seed came:
--          nothing changed; the caller reads the window's usage from the database and asks again
--          with it as the seed (used only while the state is still missing).
local unpack, pack = struct.unpack, struct.pack
local floor, max, min = math.floor, math.max, math.min
local out = {}
-- A subject asked again later in this call (a busy key) is read once, carried from ask to ask
-- here (tat, dp, dc, mp, mc, exp, px, changed), and written once, at its last ask.
local carried = {}

-- px: how long the key must now live (ms), or 0 to keep its expiry and overwrite in place.
local function write(key, tat, dp, dc, mp, mc, exp, px)
  local state = pack('<dddddd', tat, dp, dc, mp, mc, exp)
  if px > 0 then
    redis.call('SET', key, state, 'PX', px)
  else
    redis.call('SETRANGE', key, 0, state)
  end
end

for i = 1, #KEYS do
  local key = KEYS[i]
  local now, interval, burst, day_limit, day_id, day_end, month_limit, month_id, month_end, want,
    share_div, refund, more, seeded, seed_dc, seed_mc = unpack('<dddddddddddddddd', ARGV[i])
  -- missing: no state and no seed (nothing decided); fresh: a seed became the state (written
  -- even when the ask is refused, so the database is read once, not at every ask).
  local missing, fresh = false, false

  local tat0, dp0, dc0, mp0, mc0, exp0, px, changed = 0, 0, 0, 0, 0, 0, 0, false
  local c = carried[key]
  if c then
    tat0, dp0, dc0, mp0, mc0, exp0, px, changed = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
  else
    local stored = redis.call('GET', key)
    if stored then
      if #stored == 48 then
        tat0, dp0, dc0, mp0, mc0, exp0 = unpack('<dddddd', stored)
      else
        local a1, a2, a3, a4, a5 = string.match(stored, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
        if a1 then
          tat0, dp0, dc0, mp0, mc0 = tonumber(a1), tonumber(a2), tonumber(a3), tonumber(a4), tonumber(a5)
        end
      end
    elseif day_limit > 0 or month_limit > 0 then
      if seeded > 0 then
        if day_limit > 0 then dp0, dc0 = day_id, seed_dc end
        if month_limit > 0 then mp0, mc0 = month_id, seed_mc end
        fresh = true
      else
        missing = true
      end
    end
  end

  if missing then
    -- Nothing decided, nothing written: the caller seeds the state and asks again.
    out[i] = pack('<dddddd', -1, 0, 0, 0, 0, 0)
  else
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

    local tat1, dp1, dc1, mp1, mc1, exp1 = tat0, dp0, dc0, mp0, mc0, exp0
    if granted > 0 or refund > 0 or fresh then
      tat1, dc1, mc1 = tat + granted * interval, dc + granted, mc + granted
      dp1, mp1 = day_limit > 0 and day_id or 0, month_limit > 0 and month_id or 0
      local until_us = tat1
      if day_limit > 0 and day_end > until_us then until_us = day_end end
      if month_limit > 0 and month_end > until_us then until_us = month_end end
      if exp0 < until_us + 1000000 then
        exp1 = until_us + 60000000
        px = math.ceil((exp1 - now) / 1000)
      end
      changed = true
    end
    if more > 0 then
      if c then
        c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8] = tat1, dp1, dc1, mp1, mc1, exp1, px, changed
      else
        carried[key] = {tat1, dp1, dc1, mp1, mc1, exp1, px, changed}
      end
    else
      if c then carried[key] = nil end
      if changed then write(key, tat1, dp1, dc1, mp1, mc1, exp1, px) end
    end
    out[i] = pack('<dddddd', granted, tat0, dp0, dc0, mp0, mc0)
  end
end
-- Whatever a caller said would be asked again and was not.
for key, c in pairs(carried) do
  if c[8] then write(key, c[1], c[2], c[3], c[4], c[5], c[6], c[7]) end
end
return table.concat(out)
