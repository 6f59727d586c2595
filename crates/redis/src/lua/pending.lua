-- The pending reservations as (order id, batch id) pairs: the taken entries of every batch in
-- `pend`. KEYS: res, pend.
local out = {}
local batches = redis.call('HGETALL', KEYS[2])
for i = 1, #batches, 2 do
  local batch = batches[i]
  for order in string.gmatch(batches[i + 1], '%S+') do
    local state = redis.call('HGET', KEYS[1], order)
    if state and letter_of(state) == TAKEN and batch_of(state) == batch then
      out[#out + 1] = order
      out[#out + 1] = batch
    end
  end
end
return out
