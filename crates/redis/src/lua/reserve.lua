-- Reserves a batch. KEYS: meta, res, buyers, pend, leases. ARGV: batch id, node id ('' for no
-- lease), lease units max, lease ttl ms, then an order id and a buyer per buy. Answers one
-- word per buy, or {'unknown_sale'} having written nothing.
local meta = redis.call('HMGET', KEYS[1], 'available', 'limit')
if not meta[1] then return {'unknown_sale'} end
local available, limit = tonumber(meta[1]), tonumber(meta[2])
local batch, node = ARGV[1], ARGV[2]
local leasing = node ~= ''
local lease_max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local now, own = 0, 0
if leasing then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  own = lease_units(redis.call('HGET', KEYS[5], node))
end
-- Other nodes' leases, read only once this node's lease and the counter are empty.
local others = nil
local function other_units()
  if others then return others end
  others = {total = 0, list = {}}
  if not leasing then return others end
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    if all[i] ~= node then
      local units = lease_units(all[i + 1])
      local expires = lease_expires(all[i + 1])
      if expires <= now then
        -- Nobody renewed it: its node is gone, and its units go back on sale.
        available = available + units
        redis.call('HDEL', KEYS[5], all[i])
      elseif units > 0 then
        table.insert(others.list, {all[i], units, expires, false})
        others.total = others.total + units
      end
    end
  end
  return others
end
-- Reading the other leases may reclaim expired ones into the counter: look at it again after.
local function has_unit()
  return own + available > 0 or other_units().total > 0 or available > 0
end
local answers, reserved, fresh = {}, {}, {}
for i = 5, #ARGV, 2 do
  local order, buyer = ARGV[i], ARGV[i + 1]
  local state = redis.call('HGET', KEYS[2], order)
  if state then
    local letter = letter_of(state)
    if letter == TAKEN then
      -- Pending while its batch is in `pend`, or taken in this call (listed at the end).
      local waiting = fresh[order] or redis.call('HEXISTS', KEYS[4], batch_of(state)) == 1
      letter = waiting and PENDING or DURABLE
    end
    answers[#answers + 1] = 'duplicate:' .. letter
  elseif not has_unit() then
    answers[#answers + 1] = 'sold_out'
  elseif redis.call('HINCRBY', KEYS[3], buyer, 1) > limit then
    redis.call('HINCRBY', KEYS[3], buyer, -1)
    answers[#answers + 1] = 'limit_reached'
  else
    if own > 0 then
      own = own - 1
    elseif available > 0 then
      available = available - 1
    else
      for _, lease in ipairs(others.list) do
        if lease[2] > 0 then
          lease[2], lease[4] = lease[2] - 1, true
          break
        end
      end
      others.total = others.total - 1
    end
    redis.call('HSET', KEYS[2], order, entry_of(TAKEN, batch, buyer))
    reserved[#reserved + 1] = order
    fresh[order] = true
    answers[#answers + 1] = 'reserved'
  end
end
if #reserved > 0 then
  local prior = redis.call('HGET', KEYS[4], batch)
  local list = table.concat(reserved, ' ')
  redis.call('HSET', KEYS[4], batch, prior and (prior .. ' ' .. list) or list)
end
if leasing then
  if own == 0 and available > 0 then
    own = math.min(lease_max, math.max(1, math.floor(available / 8)))
    available = available - own
  end
  if own > 0 then
    redis.call('HSET', KEYS[5], node, lease_of(own, now + ttl))
  else
    redis.call('HDEL', KEYS[5], node)
  end
  for _, lease in ipairs(others and others.list or {}) do
    if lease[4] then
      if lease[2] > 0 then
        redis.call('HSET', KEYS[5], lease[1], lease_of(lease[2], lease[3]))
      else
        redis.call('HDEL', KEYS[5], lease[1])
      end
    end
  end
end
redis.call('HSET', KEYS[1], 'available', available)
return answers
