-- Joins the line, or finds the place already held (`Line::join`). After line_head.lua.
-- ARGV: line id hex, draw key hex, now. Answers {'pre_queue'}, {'position', p}, or a refusal:
-- {'not_set_up'}, {'not_open'}, {'ended'}.
local line, key, now = ARGV[1], ARGV[2], arg_int(3)
if not load_meta() then return {'not_set_up'} end
if now < m.opens then return {'not_open'} end
if now >= m.ends then return {'ended'} end
draw_if_due(now)
if not m.drawn then
  -- The first join keeps its key: a repeat cannot move a member in the draw.
  if redis.call('HSETNX', KEY, line, key) == 1 then
    redis.call('ZADD', PRE, 0, pre_member(key, line))
  end
  return {'pre_queue'}
end
local held = position_of(line)
if held then return {'position', int(held)} end
local position = pre_len() + redis.call('RPUSH', LATE, line)
redis.call('HSET', POS, line, int(position))
return {'position', int(position)}
