-- Allocate `count` sector numbers above both the Redis counter and the host's high-water
-- mark, and only while the Redis dataset is the one the caller knows (its generation):
-- numbers are never reused, even after Redis lost its data.
-- Returns the last number allocated, or -1 when the generation is gone or another.
local seq_key = KEYS[1]
local generation_key = KEYS[2]
local count = tonumber(ARGV[1])
local floor = tonumber(ARGV[2])
local expected_generation = ARGV[3]  -- '' skips the check (tests, tools)

if expected_generation ~= '' and redis.call('GET', generation_key) ~= expected_generation then
  return -1
end
local last = tonumber(redis.call('GET', seq_key) or '0')
if floor > last then last = floor end
last = last + count
redis.call('SET', seq_key, last)
return last
