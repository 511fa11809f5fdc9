-- After a Redis outage: adds to a subject's day and month counters what a data plane admitted
-- on its own meanwhile, and takes back what Redis counted for requests the data plane refused or
-- never used (calls answered after the data plane had stopped waiting). Only a counter of the
-- same period is changed; a missing state is left alone (it is seeded from the database, which
-- holds the same requests as usage, when it is next asked for).
-- KEYS[1]  the subject's state (the 6 packed doubles of limits.lua)
-- ARGV     4 doubles: day_id, day_delta, month_id, month_delta (deltas may be negative)
-- Returns  1 when the state was changed, 0 when not.
local unpack, pack, max = struct.unpack, struct.pack, math.max
local stored = redis.call('GET', KEYS[1])
if not stored or #stored ~= 48 then return 0 end
local tat, dp, dc, mp, mc, exp = unpack('<dddddd', stored)
local day_id, day_delta, month_id, month_delta = unpack('<dddd', ARGV[1])
local changed = 0
if day_id > 0 and dp == day_id and day_delta ~= 0 then
  dc = max(dc + day_delta, 0)
  changed = 1
end
if month_id > 0 and mp == month_id and month_delta ~= 0 then
  mc = max(mc + month_delta, 0)
  changed = 1
end
if changed == 1 then
  redis.call('SETRANGE', KEYS[1], 0, pack('<dddddd', tat, dp, dc, mp, mc, exp))
end
return changed
