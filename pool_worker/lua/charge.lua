-- Start-time fair queuing over miners (the Python twin is pool_worker.policy.charged).
-- The pool's virtual clock is the start tag of the latest claim chosen between miners; such
-- a claim of miner m starts at max(its finish tag, clock), so a miner back from idle
-- (finish tag behind the clock) starts at the clock: it cannot bank credit while it had
-- nothing to run. A claim not chosen between miners (home queue, urgent lane) is charged
-- from the finish tag and leaves the clock alone, so it never erases others' deficits.
-- Returns {new finish tag, clock} as strings.
local vtime_key = KEYS[1]
local miner = ARGV[1]
local seconds = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local clock_field = ARGV[4]
local chosen = ARGV[5] == '1'

local finish = tonumber(redis.call('HGET', vtime_key, miner) or '0')
local clock = tonumber(redis.call('HGET', vtime_key, clock_field) or '0')
local start = finish
if chosen then start = math.max(finish, clock) end
if weight <= 0 then weight = 1e-9 end
local after = start + seconds / weight
redis.call('HSET', vtime_key, miner, tostring(after))
if chosen then
  clock = start
  redis.call('HSET', vtime_key, clock_field, tostring(clock))
end
return {tostring(after), tostring(clock)}
