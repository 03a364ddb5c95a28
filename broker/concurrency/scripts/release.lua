-- Give a permit back.
-- KEYS[1] pool
-- ARGV[1] holder id
-- returns 1 if it was held, 0 if it had already expired
return redis.call('ZREM', KEYS[1], ARGV[1])
