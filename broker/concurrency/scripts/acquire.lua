-- Take permits for callers that fit in the pool after everyone queued ahead of them; otherwise
-- refuse, or (wait ttl > 0) queue the caller in arrival order (Redis time) so that waiters on every
-- replica are served first come, first served. Expired holders (crashed replicas) and waiters that
-- stopped asking (gave up, crashed) are evicted first. Several callers' requests come in one call
-- (concurrent acquires of one replica, batched), handled in order.
-- KEYS[1] pool          {broker:fn:<name>}:permits (reserved) or {broker:account}:permits
--                       zset holder -> expiry (Unix ms)
-- KEYS[2] queue         <pool>:waiters   zset waiter -> arrival (Unix µs)
-- KEYS[3] queue expiry  <pool>:waiting   zset waiter -> expiry (Unix ms)
-- ARGV, four per caller:
--   holder id     unique per guarded piece of work (the same id while it waits)
--   limit         permits in the pool, read from the config at acquire time
--   ttl ms        the holder must renew before this runs out
--   wait ttl ms   0: never queue; else queue (or stay queued) and ask again before this runs out
-- returns, per caller, {1, in use, queued} when acquired, {0, in use, queued} when not (queued:
-- waiters left in line)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local arrival = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, waiter in ipairs(gone) do
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
end

local function acquire(holder, limit, ttl, wait_ttl)
  if redis.call('ZSCORE', KEYS[1], holder) then
    redis.call('ZADD', KEYS[1], now + ttl, holder)
    return {1, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
  end
  local used = redis.call('ZCARD', KEYS[1])
  local free = limit - used
  local ahead = redis.call('ZRANK', KEYS[2], holder)
  local queued = redis.call('ZCARD', KEYS[2])
  if not ahead then
    ahead = queued  -- a newcomer stands behind everyone already queued
  end
  if ahead < free then
    if queued > 0 then
      redis.call('ZREM', KEYS[2], holder)
      redis.call('ZREM', KEYS[3], holder)
      queued = redis.call('ZCARD', KEYS[2])
    end
    redis.call('ZADD', KEYS[1], now + ttl, holder)
    redis.call('PEXPIRE', KEYS[1], ttl * 2)
    return {1, used + 1, queued}
  end
  if wait_ttl > 0 then
    redis.call('ZADD', KEYS[2], 'NX', arrival, holder)
    redis.call('ZADD', KEYS[3], now + wait_ttl, holder)
    redis.call('PEXPIRE', KEYS[2], wait_ttl * 2)
    redis.call('PEXPIRE', KEYS[3], wait_ttl * 2)
    queued = redis.call('ZCARD', KEYS[2])
  end
  return {0, used, queued}
end

local replies = {}
for i = 1, #ARGV, 4 do
  replies[#replies + 1] = acquire(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]))
end
return replies
