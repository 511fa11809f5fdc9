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
--          one request takes from every window), linked (1: KEYS[i] and KEYS[i+1] are one request
--          — a plan's windows and a route's — admitted by both or consumed in neither).
-- Returns  one string: 6 doubles per subject, granted, then tat, dp, dc, mp, mc as they were
--          BEFORE its grant. granted = -1: the subject has day or month windows and no state here
--          (Redis restarted without persistence, evicted it, or never saw it) and no seed came:
--          nothing changed (for a linked pair, in either); the caller reads the window's usage
--          from the database and asks again with it as the seed (used only while the state is
--          still missing).
local unpack, pack = struct.unpack, struct.pack
local floor, max, min = math.floor, math.max, math.min
local ARGS = '<dddddddddddddddddd'
local out = {}
-- A subject asked again later in this call (a busy key) is read once, carried from ask to ask
-- here ({tat, dp, dc, mp, mc, exp, px, changed}), and written once, at its last ask.
local carried = {}
-- Scratch tables for an ask's arguments and state (a linked pair needs two of each), reused from
-- ask to ask: no table is made per decision unless its state is carried.
local A, S, B, T = {}, {}, nil, nil

local function args(t, i)
  t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15],
    t[16], t[17], t[18] = unpack(ARGS, ARGV[i])
  return t
end

-- s[7] (px): how long the key must now live (ms), or 0 to keep its expiry and overwrite in place.
local function write(key, s)
  local state = pack('<dddddd', s[1], s[2], s[3], s[4], s[5], s[6])
  if s[7] > 0 then
    redis.call('SET', key, state, 'PX', s[7])
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
    if s[8] then write(key, s) end
  end
end

local function missing(i)
  out[i] = pack('<dddddd', -1, 0, 0, 0, 0, 0)
end

-- Answers ask i with nothing granted (a linked pair's member whose partner is missing).
local function hold(i, key, s, a, fresh)
  if s then
    local _, tat, dc, mc = measure(s, a)
    commit(i, key, s, a, fresh, 0, tat, dc, mc)
  else
    missing(i)
  end
end

local i = 1
while i <= #KEYS do
  local key, a = KEYS[i], args(A, i)
  local s, fresh = load(key, a, S)
  if a[18] > 0 and i < #KEYS then
    if not B then B, T = {}, {} end
    local key2, b = KEYS[i + 1], args(B, i + 1)
    local t, fresh2 = load(key2, b, T)
    if s and t then
      local ga, tat, dc, mc = measure(s, a)
      local gb, tat2, dc2, mc2 = measure(t, b)
      local g = min(a[10], ga, gb)
      commit(i, key, s, a, fresh, g, tat, dc, mc)
      commit(i + 1, key2, t, b, fresh2, g, tat2, dc2, mc2)
    else
      hold(i, key, s, a, fresh)
      hold(i + 1, key2, t, b, fresh2)
    end
    i = i + 2
  else
    if s then
      local avail, tat, dc, mc = measure(s, a)
      local g = min(a[10], avail)
      if a[11] > 0 then g = min(g, max(floor(avail / a[11]), 1)) end
      commit(i, key, s, a, fresh, g, tat, dc, mc)
    else
      missing(i)
    end
    i = i + 1
  end
end
-- Whatever a caller said would be asked again and was not.
for key, c in pairs(carried) do
  if c[8] then write(key, c) end
end
return table.concat(out)
