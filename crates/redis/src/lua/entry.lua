-- One entry, its taken letter answered as pending or durable. KEYS: res, pend. ARGV: order id.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state then return false end
if letter_of(state) == TAKEN then
  local letter = redis.call('HEXISTS', KEYS[2], batch_of(state)) == 1 and PENDING or DURABLE
  return entry_of(letter, batch_of(state), buyer_of(state))
end
return state
