-- Joins the line, or finds the place already held (`Line::join_with`). After line_head.lua.
-- ARGV: line id hex, draw key hex, now, proof: '' (none asked), '-' (asked, none brought), or
-- the solved challenge's id hex. Answers {'pre_queue'}, {'position', p}, or a refusal:
-- {'not_set_up'}, {'not_open'}, {'ended'}, {'proof_missing'}, {'challenge_used'}.
local line, key, now, proof = ARGV[1], ARGV[2], arg_int(3), ARGV[4]
if not load_meta() then return {'not_set_up'} end
if now < m.opens then return {'not_open'} end
if now >= m.ends then return {'ended'} end
local solved = proof ~= '' and proof ~= '-'
-- A challenge works once, even for the member it bought a place for.
if solved and redis.call('SISMEMBER', USED, proof) == 1 then return {'challenge_used'} end
draw_if_due(now)
if not m.drawn then
  if redis.call('HEXISTS', KEY, line) == 1 then return {'pre_queue'} end
else
  local held = position_of(line)
  if held then return {'position', int(held)} end
end
if proof == '-' then return {'proof_missing'} end
if solved then redis.call('SADD', USED, proof) end
-- The join chain's record, in the order Redis runs the joins (`core::line_log`).
redis.call('HSET', IDX, line, redis.call('RPUSH', CHAIN, join_record(line, now)))
if not m.drawn then
  -- The first join keeps its key: a repeat cannot move a member in the draw.
  redis.call('HSET', KEY, line, key)
  redis.call('ZADD', PRE, 0, pre_member(key, line))
  return {'pre_queue'}
end
local position = pre_len() + redis.call('RPUSH', LATE, line)
redis.call('HSET', POS, line, int(position))
return {'position', int(position)}
