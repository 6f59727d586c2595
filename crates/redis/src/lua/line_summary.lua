-- The line at a glance (`Line::summary`), the answer of line_advance.lua. ARGV: none of its
-- own. Answers {'ok', length, pre_queue, drawn, admitted_up_to, holders, bought, paused, rate}.
local function summary(now)
  return {'ok', int(length()), int(pre_len()), m.drawn and '1' or '0', int(m.admitted),
    int(holders(now)), int(redis.call('ZCARD', BOUGHT)), m.paused and '1' or '0', m.rate}
end
