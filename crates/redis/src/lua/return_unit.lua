-- Durable (or pending: see `SaleLedger::return_unit`) → returned, unit back, exactly once.
-- After release.lua. ARGV: order id.
local state = redis.call('HGET', KEYS[2], ARGV[1])
if not state then return 'unknown' end
if letter_of(state) == RETURNED then return 'already_returned' end
redis.call('HSET', KEYS[2], ARGV[1], entry_of(RETURNED, batch_of(state), buyer_of(state)))
release(state)
return 'returned'
