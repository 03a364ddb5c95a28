-- Give permits back, or leave the queue (waiters that gave up). Several callers in one call.
-- KEYS[1] pool, KEYS[2] queue, KEYS[3] queue expiry (see acquire.lua)
-- ARGV holder ids, one per caller
-- returns, per caller, 1 if it was held, 0 if it had already expired (or was only queued)
local replies = {}
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  replies[i] = redis.call('ZREM', KEYS[1], ARGV[i])
end
return replies
