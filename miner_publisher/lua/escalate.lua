-- Mark a sector escalated for its current attempt and put the urgent copy into the outbox,
-- claimed by the caller: a compare-and-set, so of several instances exactly one sends it.
-- Returns 1 when the caller must publish the copy, 0 otherwise.
local sector_key = KEYS[1]
local outbox_key = KEYS[2]
local claims_key = KEYS[3]
local phase = ARGV[1]
local attempt = ARGV[2]
local job_key = ARGV[3]
local job_value = ARGV[4]
local owner = ARGV[5]
local claim_ms = tonumber(ARGV[6])

local s = redis.call('HMGET', sector_key, 'state', 'phase', 'attempt', 'escalated')
if s[1] ~= 'queued' or s[2] ~= phase or s[3] ~= attempt or s[4] == attempt then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', sector_key, 'escalated', attempt)
redis.call('HSET', outbox_key, job_key, job_value)
redis.call('HSET', claims_key, job_key, owner .. '|' .. (now_ms + claim_ms))
return 1
