-- Take the lease of one job attempt, or say why not. One script, so "is it done?",
-- "who holds it?" and the grant cannot interleave with another worker's.
-- Returns {"done", result} | {"held", holder} | {"granted", epoch, starts}.
local lease_key = KEYS[1]
local done_key = KEYS[2]
local epoch_key = KEYS[3]
local starts_key = KEYS[4]
local holder = ARGV[1]            -- "<worker>/<instance>/<slot>"
local ttl_ms = ARGV[2]
local instance_prefix = ARGV[3]   -- "<ns>:instance:"
local keep_s = ARGV[4]            -- how long epoch/starts counters are kept

local done = redis.call('GET', done_key)
if done then return {'done', done} end

local current = redis.call('GET', lease_key)
if current then
  -- "<worker>/<instance>/<slot>|<epoch>": taken over only if that instance is gone.
  local owner = string.match(current, '^([^|]*)|')
  local instance = owner and string.match(owner, '^[^/]*/([^/]*)/')
  if instance and redis.call('EXISTS', instance_prefix .. instance) == 1 then
    return {'held', owner}
  end
end

local epoch = redis.call('INCR', epoch_key)
redis.call('EXPIRE', epoch_key, keep_s)
redis.call('SET', lease_key, holder .. '|' .. epoch, 'PX', ttl_ms)
local starts = redis.call('INCR', starts_key)
redis.call('EXPIRE', starts_key, keep_s)
return {'granted', epoch, starts}
