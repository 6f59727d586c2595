-- Where a member stands at `now` (`Line::standing`), drawing first if due. After
-- line_head.lua. ARGV: line id hex, now, units within reach (left plus returnable). Answers
-- {'pre_queue'}, {'waiting', position, ahead}, {'admitted', position, until ms},
-- {'bought', position}, {'passed', position}, {'sold_out', position, ahead}, {'none'}, or
-- {'not_set_up'}.
local line, now, units = ARGV[1], arg_int(2), arg_int(3)
if not load_meta() then return {'not_set_up'} end
draw_if_due(now)
if not m.drawn then
  return redis.call('HEXISTS', KEY, line) == 1 and {'pre_queue'} or {'none'}
end
local position = position_of(line)
if not position then return {'none'} end
if position <= m.admitted then
  local ends = admitted_until(position)
  if ends and ends > now then return {'admitted', int(position), int(ends)} end
  if redis.call('ZSCORE', BOUGHT, int(position)) then return {'bought', int(position)} end
  return {'passed', int(position)}
end
local ahead = position - m.admitted - 1
local reach = math.max(0, units - holders(now))
return {ahead >= reach and 'sold_out' or 'waiting', int(position), int(ahead)}
