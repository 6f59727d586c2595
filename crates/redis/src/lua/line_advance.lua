-- Moves the admission counter as far as the rate and the units allow (`Line::advance`) and
-- answers the summary. After line_head.lua and line_summary.lua. ARGV: now, rate per second,
-- units left. Answers as line_summary.lua, or {'not_set_up'}.
local now, rate, units_left = arg_int(1), arg_int(2), arg_int(3)
if not load_meta() then return {'not_set_up'} end

-- Admits every position up to `up_to` at `at` (`Line::apply_admission`).
local function apply_admission(up_to, at)
  m.admitted = up_to
  redis.call('HSET', META, 'admitted_up_to', int(up_to))
  local last = redis.call('ZRANGE', ADM, -1, -1, 'WITHSCORES')
  local shared = at
  if #last > 0 and at - tonumber(last[1]) < ADMISSION_SHARED_MS then
    -- Within a second of the last admission: it shares that one's time, so its end.
    shared = tonumber(last[1])
    redis.call('ZADD', ADM, 'XX', int(up_to), last[1])
  else
    redis.call('ZADD', ADM, int(up_to), int(at))
  end
  redis.call('RPUSH', EVENTS, admitted_event(up_to, shared))
end

draw_if_due(now)
end_admissions(now)
if m.drawn and units_left == 0 and m.sold_out_after ~= m.admitted then
  -- Out of units: chained once per admission (`Line::apply_sold_out`).
  m.sold_out_after = m.admitted
  redis.call('HSET', META, 'sold_out_after', int(m.admitted))
  redis.call('RPUSH', EVENTS, sold_out_event(m.admitted))
end
if m.drawn then
  -- A caller whose clock is behind the last advance's does not move time backwards.
  local t = now
  if m.last_advance and m.last_advance > t then t = m.last_advance end
  local burst = math.max(rate, 1) * 1000
  if m.paused or rate == 0 then
    -- No credit builds up while held: resuming does not let a crowd through at once.
    m.credit = math.min(m.credit, burst)
  else
    local elapsed = m.last_advance and (t - m.last_advance) or 0
    -- Past 2^53 the sum rounds, but only upwards of `burst`, which the min then gives.
    m.credit = math.min(m.credit + rate * elapsed, burst)
    local room = math.max(0, units_left - holders(t))
    local waiting = length() - m.admitted
    local admit = math.min(math.floor(m.credit / 1000), room, waiting)
    if admit > 0 then
      m.credit = m.credit - admit * 1000
      apply_admission(m.admitted + admit, t)
    end
  end
  m.last_advance = t
  redis.call('HSET', META, 'credit_milli', int(m.credit), 'last_advance_ms', int(t))
end
return summary(now)
