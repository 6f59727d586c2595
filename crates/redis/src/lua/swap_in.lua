-- Swaps a staged ledger in, replacing the live one, or (ARGV[1] = 'if_absent') only when there
-- is none: the check and the swap are one step, so two nodes recovering at once cannot replace
-- a ledger another node already sells from. KEYS: meta, res, buyers, then the three staged
-- keys in the same order, then pend and leases (a new ledger has nothing pending or leased).
if ARGV[1] == 'if_absent' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6])
  return 'present'
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 'staging_missing' end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[7], KEYS[8])
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i + 3]) == 1 then
    redis.call('RENAME', KEYS[i + 3], KEYS[i])
    redis.call('PERSIST', KEYS[i])
  end
end
return 'ok'
