-- Notes a buy under the admission of a position (idempotent). After line_head.lua. ARGV:
-- position. Answers 'ok' or 'not_set_up'.
local position = arg_int(1)
if redis.call('EXISTS', META) == 0 then return 'not_set_up' end
redis.call('ZADD', BOUGHT, int(position), int(position))
return 'ok'
