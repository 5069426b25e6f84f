-- The broker has the job: clear it from the outbox (with its claim) and count the sector as
-- out in the pool, unless the sector already moved on (its result came back first); count
-- it in the miner's stats when asked (one round trip for both).
local outbox_key = KEYS[1]
local published_key = KEYS[2]
local sector_key = KEYS[3]
local claims_key = KEYS[4]
local stats_key = KEYS[5]
local job_key = ARGV[1]
local job_value = ARGV[2]
local number = ARGV[3]
local phase = ARGV[4]
local attempt = ARGV[5]
local counter = ARGV[6]          -- '' counts nothing

if redis.call('HGET', outbox_key, job_key) == job_value then
  redis.call('HDEL', outbox_key, job_key)
  redis.call('HDEL', claims_key, job_key)
end
local s = redis.call('HMGET', sector_key, 'state', 'phase', 'attempt')
if s[1] == 'queued' and s[2] == phase and s[3] == attempt then
  redis.call('SADD', published_key, number)
end
if counter ~= '' then redis.call('HINCRBY', stats_key, counter, 1) end
return 1
