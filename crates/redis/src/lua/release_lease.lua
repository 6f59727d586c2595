-- Gives a node's lease back to the counter. KEYS: meta, leases. ARGV: node id.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
local lease = redis.call('HGET', KEYS[2], ARGV[1])
if not lease then return 'none' end
redis.call('HINCRBY', KEYS[1], 'available', lease_units(lease))
redis.call('HDEL', KEYS[2], ARGV[1])
return 'released'
