-- Pauses, resumes or re-rates the line (the whole control). After line_head.lua. ARGV:
-- paused ('0' or '1'), rate (`layout::encode_rate`). Answers 'ok' or 'not_set_up'.
if redis.call('EXISTS', META) == 0 then return 'not_set_up' end
redis.call('HSET', META, 'paused', ARGV[1], 'rate', ARGV[2])
return 'ok'
