-- Pending → forgotten, unit back; a batch with nothing pending left leaves `pend`. After
-- release.lua. ARGV: order ids.
local touched = {}
for i = 1, #ARGV do
  local state = redis.call('HGET', KEYS[2], ARGV[i])
  if state and pending(state) then
    redis.call('HDEL', KEYS[2], ARGV[i])
    release(state)
    touched[batch_of(state)] = true
  end
end
for batch in pairs(touched) do
  local left = false
  for order in string.gmatch(redis.call('HGET', KEYS[4], batch) or '', '%S+') do
    local state = redis.call('HGET', KEYS[2], order)
    if state and letter_of(state) == TAKEN and batch_of(state) == batch then
      left = true
      break
    end
  end
  if not left then redis.call('HDEL', KEYS[4], batch) end
end
return 'ok'
