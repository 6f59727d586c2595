-- Sets a line up, or moves its times as Line::set_times does: every time before the draw;
-- after it only the end and the admission time (the start stays where the draw happened).
-- After line_head.lua. ARGV: opens, starts, ends (Unix ms), admission ms.
-- Answers 'created', 'moved' or 'kept' (drawn: only the end and the admission time moved).
local opens, starts, ends, admission = arg_int(1), arg_int(2), arg_int(3), arg_int(4)
if redis.call('EXISTS', META) == 0 then
  -- A new line starts empty, even where pieces of a lost one survived (a partial loss).
  redis.call('UNLINK', PRE, KEY, POS, LATE, ADM, BOUGHT, USED, CHAIN, IDX, EVENTS)
  redis.call('HSET', META, 'drawn', '0', 'admitted_up_to', '0', 'credit_milli', '0',
    'ended_up_to', '0', 'paused', '0', 'rate', '', 'opens_ms', int(opens),
    'starts_ms', int(starts), 'ends_ms', int(ends), 'admission_ms', int(admission))
  return 'created'
end
if redis.call('HGET', META, 'drawn') == '1' then
  redis.call('HSET', META, 'ends_ms', int(ends), 'admission_ms', int(admission))
  return 'kept'
end
redis.call('HSET', META, 'opens_ms', int(opens), 'starts_ms', int(starts), 'ends_ms', int(ends),
  'admission_ms', int(admission))
return 'moved'
