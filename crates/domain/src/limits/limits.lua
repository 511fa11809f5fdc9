-- Atomic check-and-consume of every window of one or more subjects: `grant` (and, for linked
-- subjects, `decide_linked`) in limits/mod.rs in Lua (both are held to the same tests). Data planes
-- batch concurrent requests into one call; each subject (or linked group) is still decided
-- atomically and in order, and a refusal changes nothing.
-- Numbers travel as little-endian doubles packed with Redis's `struct` library (exact for integers
-- below 2^53; times are in µs): no decimal parsing or formatting on the hot path.
-- KEYS[i]  subject i's state: tat, dp, dc, mp, mc, exp (GCRA arrival time, day id and count, month
--          id and count, when the key expires) as 6 doubles; the text form "tat dp dc mp mc" of
--          earlier versions is still read. The key lives a minute past what its windows need, so
--          most writes overwrite it in place (SETRANGE keeps the expiry) instead of SET ... PX,
--          which costs three times as much.
-- ARGV[i]  18 doubles: now_us, interval_us, burst, day_limit (0 = none), day_id, day_end_us,
--          month_limit (0 = none), month_id, month_end_us, want, share_div (0 = no cap), refund
--          (unspent units of an expired lease, given back first), more (1 when KEYS[i] is asked
--          again later in this call: its state is then carried, not written, until the last),
--          seeded (1: the next two are what the database holds), seed_dc, seed_mc, cost (units
--          one request takes from every window), linked (k > 0: KEYS[i] .. KEYS[i+k] are one
--          request — a plan's windows with a route's and the tenant's ceiling — admitted by all or
--          consumed in none).
-- Returns  one string: 6 doubles per subject, granted, then tat, dp, dc, mp, mc as they were
--          BEFORE its grant. granted = -1: the subject has day or month windows and no state here
--          (Redis restarted without persistence, evicted it, or never saw it) and no seed came:
--          nothing changed (for a linked group, in none); the caller reads the window's usage
--          from the database and asks again with it as the seed (used only while the state is
--          still missing).
local unpack, pack = struct.unpack, struct.pack
local floor, max, min = math.floor, math.max, math.min
local ARGS = '<dddddddddddddddddd'
local out = {}
-- A subject asked again later in this call (a busy key) is read once, carried from ask to ask
-- here ({tat, dp, dc, mp, mc, exp, px, changed}), and written once, at its last ask.
local carried = {}
-- Scratch tables for a linked group's arguments and states (one per member), made at the first
-- group of a call (at their full size: filling an empty table grows it five times over) and reused.
local GA, GS = {}, {}
-- Per member of the group being decided: its state (GS[k] or its carried table), whether a seed
-- just became it, and the arrival time and counts its grant starts from (no table per request).
local GSt, GFr, GT, GD, GM = {}, {}, {}, {}, {}

local function args(t, i)
  t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15],
    t[16], t[17], t[18] = unpack(ARGS, ARGV[i])
  return t
end

-- px: how long the key must now live (ms), or 0 to keep its expiry and overwrite in place.
local function write(key, tat, dp, dc, mp, mc, exp, px)
  local state = pack('<dddddd', tat, dp, dc, mp, mc, exp)
  if px > 0 then
    redis.call('SET', key, state, 'PX', px)
  else
    redis.call('SETRANGE', key, 0, state)
  end
end

-- The state of `key` before this ask (in `s`, unless it is carried) and whether a seed just
-- became it (written even when the ask is refused, so the database is read once, not at every
-- ask); nil when it is missing.
local function load(key, a, s)
  local c = carried[key]
  if c then return c, false end
  s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8] = 0, 0, 0, 0, 0, 0, 0, false
  local stored = redis.call('GET', key)
  if stored then
    if #stored == 48 then
      s[1], s[2], s[3], s[4], s[5], s[6] = unpack('<dddddd', stored)
    else
      local a1, a2, a3, a4, a5 = string.match(stored, '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
      if a1 then
        s[1], s[2], s[3], s[4], s[5] = tonumber(a1), tonumber(a2), tonumber(a3), tonumber(a4), tonumber(a5)
      end
    end
  elseif a[4] > 0 or a[7] > 0 then
    if a[14] == 0 then return nil, false end
    if a[4] > 0 then s[2], s[3] = a[5], a[15] end
    if a[7] > 0 then s[4], s[5] = a[8], a[16] end
    return s, true
  end
  return s, false
end

-- Requests (of a[17] units each) every window of state s admits now, after the refund; and the
-- arrival time and counts the grant starts from.
local function measure(s, a)
  local now, interval, burst, cost, refund = a[1], a[2], a[3], a[17], a[12]
  local tat = max(s[1] - refund * interval, now)
  local avail = floor(max(floor((now + burst * interval - tat) / interval), 0) / cost)
  local dc, mc = 0, 0
  if a[4] > 0 then
    if s[2] == a[5] then dc = max(s[3] - refund, 0) end
    avail = min(avail, floor(max(a[4] - dc, 0) / cost))
  end
  if a[7] > 0 then
    if s[4] == a[8] then mc = max(s[5] - refund, 0) end
    avail = min(avail, floor(max(a[7] - mc, 0) / cost))
  end
  return avail, tat, dc, mc
end

-- Answers ask i and applies its grant to s (carried, or written at the subject's last ask).
local function commit(i, key, s, a, fresh, granted, tat, dc, mc)
  out[i] = pack('<dddddd', granted, s[1], s[2], s[3], s[4], s[5])
  if granted > 0 or a[12] > 0 or fresh then
    local used = granted * a[17]
    s[1], s[3], s[5] = tat + used * a[2], dc + used, mc + used
    s[2] = a[4] > 0 and a[5] or 0
    s[4] = a[7] > 0 and a[8] or 0
    local until_us = s[1]
    if a[4] > 0 and a[6] > until_us then until_us = a[6] end
    if a[7] > 0 and a[9] > until_us then until_us = a[9] end
    if s[6] < until_us + 1000000 then
      s[6] = until_us + 60000000
      s[7] = math.ceil((s[6] - a[1]) / 1000)
    end
    s[8] = true
  end
  if a[13] > 0 then
    if carried[key] ~= s then carried[key] = {s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]} end
  else
    carried[key] = nil
    if s[8] then write(key, s[1], s[2], s[3], s[4], s[5], s[6], s[7]) end
  end
end

local function missing_at(i)
  out[i] = pack('<dddddd', -1, 0, 0, 0, 0, 0)
end

-- Answers ask i with nothing granted (a linked group's member whose partner is missing).
local function hold(i, key, s, a, fresh)
  if s then
    local _, tat, dc, mc = measure(s, a)
    commit(i, key, s, a, fresh, 0, tat, dc, mc)
  else
    missing_at(i)
  end
end

local n = #KEYS
local i = 1
while i <= n do
  local key = KEYS[i]
  local now, interval, burst, day_limit, day_id, day_end, month_limit, month_id, month_end, want,
    share_div, refund, more, seeded, seed_dc, seed_mc, cost, linked = unpack(ARGS, ARGV[i])
  if linked > 0 and i + linked <= n then
    -- A linked group (a plan's windows with a route's and the tenant's): decided together,
    -- through the helpers.
    local members = linked + 1
    local all = true
    for k = 1, members do
      if not GA[k] then
        GA[k] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
        GS[k] = {0, 0, 0, 0, 0, 0, 0, false}
      end
      local a = args(GA[k], i + k - 1)
      GSt[k], GFr[k] = load(KEYS[i + k - 1], a, GS[k])
      if not GSt[k] then all = false end
    end
    if all then
      local g = GA[1][10]
      for k = 1, members do
        local avail
        avail, GT[k], GD[k], GM[k] = measure(GSt[k], GA[k])
        g = min(g, avail)
      end
      for k = 1, members do
        commit(i + k - 1, KEYS[i + k - 1], GSt[k], GA[k], GFr[k], g, GT[k], GD[k], GM[k])
      end
    else
      for k = 1, members do
        hold(i + k - 1, KEYS[i + k - 1], GSt[k], GA[k], GFr[k])
      end
    end
    i = i + members
  else
    -- One subject, the common ask: all in locals (no table unless its state is carried).
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
      missing_at(i)
    else
      local tat = max(tat0 - refund * interval, now)
      local avail = floor(max(floor((now + burst * interval - tat) / interval), 0) / cost)
      local dc = 0
      if day_limit > 0 and dp0 == day_id then dc = max(dc0 - refund, 0) end
      local mc = 0
      if month_limit > 0 and mp0 == month_id then mc = max(mc0 - refund, 0) end
      if day_limit > 0 then avail = min(avail, floor(max(day_limit - dc, 0) / cost)) end
      if month_limit > 0 then avail = min(avail, floor(max(month_limit - mc, 0) / cost)) end
      local granted = min(want, avail)
      if share_div > 0 then granted = min(granted, max(floor(avail / share_div), 1)) end

      local tat1, dp1, dc1, mp1, mc1, exp1 = tat0, dp0, dc0, mp0, mc0, exp0
      if granted > 0 or refund > 0 or fresh then
        local used = granted * cost
        tat1, dc1, mc1 = tat + used * interval, dc + used, mc + used
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
    i = i + 1
  end
end
-- Whatever a caller said would be asked again and was not.
for key, c in pairs(carried) do
  if c[8] then write(key, c[1], c[2], c[3], c[4], c[5], c[6], c[7]) end
end
return table.concat(out)
