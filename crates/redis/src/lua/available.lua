-- Units not in any reservation: the counter plus every lease. KEYS: meta, leases. -1 for an
-- unknown sale.
local available = redis.call('HGET', KEYS[1], 'available')
if not available then return -1 end
local total = tonumber(available)
for _, lease in ipairs(redis.call('HVALS', KEYS[2])) do
  total = total + lease_units(lease)
end
return total
