-- Compare-and-set of one sector's record: applies only if (state, phase, attempt) are still
-- what the caller read, and, for a result, only if the result's lease epoch is the current
-- one (fencing). The next job goes into the outbox in the same step.
-- Returns 1 applied, 0 the sector changed, -1 admission quota used up, -2 stale epoch.
local sector_key = KEYS[1]
local history_key = KEYS[2]
local outbox_key = KEYS[3]
local due_key = KEYS[4]
local pending_key = KEYS[5]
local inflight_key = KEYS[6]
local inflight_deal_key = KEYS[7]
local published_key = KEYS[8]
local claims_key = KEYS[9]
local epoch_key = KEYS[10]
local watch_key = KEYS[11]         -- queued/chain sectors by when the miner looks next
local finished_key = KEYS[12]      -- done/failed sectors by when they finished

local expected_state = ARGV[1]
local expected_phase = ARGV[2]
local expected_attempt = ARGV[3]
local fields_json = ARGV[4]
local history_entry = ARGV[5]      -- '' for none
local job_key = ARGV[6]            -- outbox field, '' when no job is dispatched
local job_value = ARGV[7]
local due_at = ARGV[8]             -- '' when no chain step is pending
local number = ARGV[9]
local new_state = ARGV[10]
local pending_score = ARGV[11]
local max_inflight = ARGV[12]      -- '' for no admission quota
local sector_class = ARGV[13]
local quota_of = ARGV[14]          -- 'all' | 'deal': which in-flight set the quota counts
local fence_epoch = ARGV[15]       -- '' unless a result is applied
local claim_owner = ARGV[16]       -- '' when nobody publishes the job now (held)
local claim_ms = tonumber(ARGV[17])

local s = redis.call('HMGET', sector_key, 'state', 'phase', 'attempt')
if s[1] ~= expected_state or s[2] ~= expected_phase or s[3] ~= expected_attempt then
  return 0
end
if fence_epoch ~= '' and redis.call('GET', epoch_key) ~= fence_epoch then return -2 end
if max_inflight ~= '' then
  local counted = quota_of == 'deal' and inflight_deal_key or inflight_key
  if redis.call('SCARD', counted) >= tonumber(max_inflight) then return -1 end
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = cjson.decode(fields_json)
for k, v in pairs(fields) do
  if v == '' then redis.call('HDEL', sector_key, k) else redis.call('HSET', sector_key, k, v) end
end
if job_key ~= '' then
  -- When the miner handed this attempt out, on the Redis clock (durations are clamped to it).
  redis.call('HSET', sector_key, 'dispatched_at', string.format('%.3f', now_ms / 1000))
end
if history_entry ~= '' then redis.call('RPUSH', history_key, history_entry) end
if job_key ~= '' then
  redis.call('HSET', outbox_key, job_key, job_value)
  if claim_owner ~= '' then
    redis.call('HSET', claims_key, job_key, claim_owner .. '|' .. (now_ms + claim_ms))
  else
    redis.call('HDEL', claims_key, job_key)
  end
end
if due_at ~= '' then redis.call('ZADD', due_key, due_at, number)
else redis.call('ZREM', due_key, number) end
redis.call('SREM', published_key, number)  -- its previous job, if any, is settled
if new_state == 'pending' then redis.call('ZADD', pending_key, pending_score, number)
else redis.call('ZREM', pending_key, number) end
if new_state == 'queued' then
  redis.call('SADD', inflight_key, number)
  if sector_class == 'deal' then redis.call('SADD', inflight_deal_key, number) end
else
  redis.call('SREM', inflight_key, number)
  redis.call('SREM', inflight_deal_key, number)
end
local now_s = string.format('%.3f', now_ms / 1000)
-- A sector that moved is looked at afresh (escalation, watchdog) at once.
if new_state == 'queued' or new_state == 'chain' then redis.call('ZADD', watch_key, now_s, number)
else redis.call('ZREM', watch_key, number) end
if new_state == 'done' or new_state == 'failed' then redis.call('ZADD', finished_key, now_s, number)
else redis.call('ZREM', finished_key, number) end
return 1
