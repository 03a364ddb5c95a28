-- Mark a replica alive for a mapping and count the live ones.
-- KEYS[1] {broker:esm:<uuid>}:replicas   zset replica -> expiry (Unix ms, Redis TIME)
-- ARGV[1] replica id, ARGV[2] ttl ms (0: leave, as on shutdown)
-- returns the number of live replicas
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
