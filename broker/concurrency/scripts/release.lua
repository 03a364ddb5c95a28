-- Give a permit back, or leave the queue (a waiter that gave up).
-- KEYS[1] pool, KEYS[2] queue, KEYS[3] queue expiry (see acquire.lua)
-- ARGV[1] holder id
-- returns 1 if it was held, 0 if it had already expired (or was only queued)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
