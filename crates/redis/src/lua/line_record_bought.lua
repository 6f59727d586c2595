-- Notes a buy under the admission of a position (idempotent; the first one goes on the event
-- chain). After line_head.lua. ARGV: position. Answers 'ok' or 'not_set_up'.
local position = arg_int(1)
if redis.call('EXISTS', META) == 0 then return 'not_set_up' end
if redis.call('ZADD', BOUGHT, int(position), int(position)) == 1 then
  redis.call('RPUSH', EVENTS, bought_event(position))
end
return 'ok'
