-- Set when the miner looks at an in-flight sector next, unless a transition moved it since
-- the caller read it (its score is no longer the one seen: it is due now, keep that).
-- next_at '' removes it (the sector is no longer in flight). Returns 1 if changed.
local watch_key = KEYS[1]
local number = ARGV[1]
local seen = tonumber(ARGV[2])
local next_at = ARGV[3]

local score = redis.call('ZSCORE', watch_key, number)
if not score or tonumber(score) ~= seen then return 0 end
if next_at == '' then redis.call('ZREM', watch_key, number)
else redis.call('ZADD', watch_key, next_at, number) end
return 1
