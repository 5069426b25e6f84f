-- Claim an outbox entry for publishing, on the Redis clock: nobody else publishes (or
-- republishes) it while the claim lasts, and the owner extends it while it waits for the
-- broker. A claim written with the entry doubles as its grace period.
-- Returns 1 claimed (or extended), 0 the entry is gone or changed, -1 claimed by another.
local outbox_key = KEYS[1]
local claims_key = KEYS[2]
local job_key = ARGV[1]
local expected_value = ARGV[2]
local owner = ARGV[3]
local claim_ms = tonumber(ARGV[4])
local new_value = ARGV[5]          -- '' keeps the entry as it is (a held job is released)
local sweeping = ARGV[6] == '1'    -- the sweep takes only entries nobody (us included) holds

if redis.call('HGET', outbox_key, job_key) ~= expected_value then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claim = redis.call('HGET', claims_key, job_key)
if claim then
  local holder, until_ms = string.match(claim, '^(.*)|(%d+)$')
  local live = until_ms and tonumber(until_ms) > now_ms
  if live and (sweeping or holder ~= owner) then return -1 end
end
if new_value ~= '' then redis.call('HSET', outbox_key, job_key, new_value) end
redis.call('HSET', claims_key, job_key, owner .. '|' .. (now_ms + claim_ms))
return 1
