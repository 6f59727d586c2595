-- Gives back a unit and the buyer's count. Shared head of the two releasing scripts
-- (cancel_pending.lua, return_unit.lua). KEYS: meta, res, buyers, pend.
local function release(state)
  local buyer = buyer_of(state)
  redis.call('HINCRBY', KEYS[1], 'available', 1)
  if redis.call('HINCRBY', KEYS[3], buyer, -1) <= 0 then redis.call('HDEL', KEYS[3], buyer) end
end
local function pending(state)
  return letter_of(state) == TAKEN and redis.call('HEXISTS', KEYS[4], batch_of(state)) == 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
