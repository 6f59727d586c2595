-- Reads the line's chains (`core::line_log`). After line_head.lua. ARGV: 'receipt', line id
-- hex: answers {'ok'} or {'ok', index}; or 'joins' / 'events', first (1-based), limit:
-- answers {'ok', record, ...} (`layout.rs` has the records' text). {'not_set_up'} without a
-- line.
local what = ARGV[1]
if redis.call('EXISTS', META) == 0 then return {'not_set_up'} end
if what == 'receipt' then
  local index = redis.call('HGET', IDX, ARGV[2])
  if index then return {'ok', index} end
  return {'ok'}
end
local first, limit = arg_int(2), arg_int(3)
local out = {'ok'}
if limit == 0 then return out end
local list = CHAIN
if what == 'events' then list = EVENTS end
for _, record in ipairs(redis.call('LRANGE', list, first - 1, first + limit - 2)) do
  out[#out + 1] = record
end
return out
