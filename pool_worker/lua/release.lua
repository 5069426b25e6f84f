-- Give a lease up without a result (a hand-back): not a crash, so the start is uncounted.
-- Returns 1 if the lease was ours.
local lease_key = KEYS[1]
local starts_key = KEYS[2]
local value = ARGV[1]

if redis.call('GET', lease_key) ~= value then return 0 end
redis.call('DEL', lease_key)
if tonumber(redis.call('GET', starts_key) or '0') > 0 then redis.call('DECR', starts_key) end
return 1
