-- Record a result under the lease's fencing token: only the holder of the current epoch
-- may write the done marker. Returns 1 if recorded, 0 if fenced off (someone was granted
-- the attempt after us, or holds its lease now).
local lease_key = KEYS[1]
local done_key = KEYS[2]
local epoch_key = KEYS[3]
local starts_key = KEYS[4]
local value = ARGV[1]            -- our lease value "<holder>|<epoch>"
local epoch = ARGV[2]
local result = ARGV[3]
local done_ttl_s = ARGV[4]

if redis.call('GET', epoch_key) ~= epoch then return 0 end
local current = redis.call('GET', lease_key)
if current and current ~= value then return 0 end
redis.call('SET', done_key, result, 'EX', done_ttl_s)
redis.call('DEL', lease_key)
redis.call('DEL', starts_key)
return 1
