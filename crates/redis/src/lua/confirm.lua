-- A batch is durable: its taken entries are no longer pending. KEYS: meta, pend. ARGV: batch.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_sale' end
redis.call('HDEL', KEYS[2], ARGV[1])
return 'ok'
