-- Take a permit if the pool has room. Expired holders (crashed replicas) are evicted first.
-- KEYS[1] pool          {broker:fn:<name>}:permits (reserved) or {broker:account}:permits
-- ARGV[1] holder id     unique per guarded piece of work
-- ARGV[2] limit         permits in the pool, read from the config at acquire time
-- ARGV[3] ttl ms        the holder must renew before this runs out
-- returns {1, in use} when acquired, {0, in use} when the pool is full
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  return {1, redis.call('ZCARD', KEYS[1])}
end
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[2]) then
  return {0, used}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return {1, used + 1}
