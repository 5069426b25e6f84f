-- Extend the leases this process holds. A lease that expired (Redis was away longer than
-- the TTL) is taken back only if no grant happened since: the epoch is still ours.
-- KEYS: lease_1, epoch_1, lease_2, epoch_2, ...; ARGV: ttl_ms, value_1, epoch_1, ...
-- Returns the lease keys that are no longer ours.
local ttl_ms = ARGV[1]
local lost = {}
for i = 1, #KEYS, 2 do
  local lease_key = KEYS[i]
  local epoch_key = KEYS[i + 1]
  local value = ARGV[i + 1]
  local epoch = ARGV[i + 2]
  local current = redis.call('GET', lease_key)
  if current == value then
    redis.call('PEXPIRE', lease_key, ttl_ms)
  elseif (not current) and redis.call('GET', epoch_key) == epoch then
    redis.call('SET', lease_key, value, 'PX', ttl_ms)
  else
    table.insert(lost, lease_key)
  end
end
return lost
