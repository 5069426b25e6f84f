-- Start-time fair queuing over miners (the Python twin is pool_worker.policy.charged).
-- The pool's virtual clock is the start tag of the latest claim; a claim of miner m
-- starts at max(its finish tag, clock), so a miner back from idle (finish tag behind the
-- clock) starts at the clock: it cannot bank credit while it had nothing to run.
-- Returns {new finish tag, new clock} as strings.
local vtime_key = KEYS[1]
local miner = ARGV[1]
local seconds = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local clock_field = ARGV[4]

local finish = tonumber(redis.call('HGET', vtime_key, miner) or '0')
local clock = tonumber(redis.call('HGET', vtime_key, clock_field) or '0')
local start = math.max(finish, clock)
if weight <= 0 then weight = 1e-9 end
local after = start + seconds / weight
redis.call('HSET', vtime_key, miner, tostring(after), clock_field, tostring(start))
return {tostring(after), tostring(start)}
