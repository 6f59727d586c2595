-- A member's place, drawing first if due. After line_head.lua. ARGV: line id hex, now.
-- Answers {'pre_queue'}, {'position', p}, {'none'} or {'not_set_up'}.
local line, now = ARGV[1], arg_int(2)
if not load_meta() then return {'not_set_up'} end
draw_if_due(now)
if not m.drawn then
  return redis.call('HEXISTS', KEY, line) == 1 and {'pre_queue'} or {'none'}
end
local position = position_of(line)
if position then return {'position', int(position)} end
return {'none'}
