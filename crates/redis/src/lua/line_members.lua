-- The members in position order from position ARGV[1] (1-based), at most ARGV[2] of them,
-- after the draw (none before it). After line_head.lua. Answers {'ok', line id, ...} or
-- {'not_set_up'}.
local first, limit = arg_int(1), arg_int(2)
if not load_meta() then return {'not_set_up'} end
local out = {'ok'}
if not m.drawn or limit == 0 then return out end
local last = first + limit - 1
local drawn = pre_len()
if first <= drawn then
  for _, member in ipairs(redis.call('ZRANGE', PRE, first - 1, math.min(last, drawn) - 1)) do
    out[#out + 1] = line_of_pre_member(member)
  end
end
if last > drawn then
  local from = math.max(first - drawn, 1) - 1
  for _, line in ipairs(redis.call('LRANGE', LATE, from, last - drawn - 1)) do
    out[#out + 1] = line
  end
end
return out
