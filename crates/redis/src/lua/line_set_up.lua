-- Sets a line up, or moves its times while nobody has joined; a line with members keeps
-- everything. After line_head.lua. ARGV: opens, starts, ends (Unix ms), admission ms.
-- Answers 'created', 'moved' or 'kept'.
local opens, starts, ends, admission = arg_int(1), arg_int(2), arg_int(3), arg_int(4)
local times = {'opens_ms', int(opens), 'starts_ms', int(starts), 'ends_ms', int(ends),
  'admission_ms', int(admission)}
if redis.call('EXISTS', META) == 0 then
  -- A new line starts empty, even where pieces of a lost one survived (a partial loss).
  redis.call('UNLINK', PRE, KEY, POS, LATE, ADM, BOUGHT)
  redis.call('HSET', META, 'drawn', '0', 'admitted_up_to', '0', 'credit_milli', '0',
    'ended_up_to', '0', 'paused', '0', 'rate', '', unpack(times))
  return 'created'
end
if length() == 0 then
  redis.call('HSET', META, unpack(times))
  return 'moved'
end
return 'kept'
