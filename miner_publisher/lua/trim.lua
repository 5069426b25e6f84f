-- Retention: forget one finished sector (record, history, index entries) if it is still
-- done or failed and finished before the cutoff. Its number is never reused (seq).
-- Returns 1 if trimmed.
local sector_key = KEYS[1]
local history_key = KEYS[2]
local sectors_key = KEYS[3]
local finished_key = KEYS[4]
local stats_key = KEYS[5]
local number = ARGV[1]
local cutoff = tonumber(ARGV[2])

local finished = redis.call('ZSCORE', finished_key, number)
if not finished or tonumber(finished) > cutoff then return 0 end
local state = redis.call('HGET', sector_key, 'state')
if state and state ~= 'done' and state ~= 'failed' then  -- requeued meanwhile
  redis.call('ZREM', finished_key, number)
  return 0
end
redis.call('DEL', sector_key, history_key)
redis.call('ZREM', sectors_key, number)
redis.call('ZREM', finished_key, number)
redis.call('HINCRBY', stats_key, 'trimmed', 1)
return 1
