-- Take (or keep) the lease of one shard. A free or expired lease goes to the caller with a new
-- epoch (the fencing token its checkpoint writes must carry).
-- KEYS[1] {broker:esm:<uuid>}:lease_owner   hash shard -> replica
-- KEYS[2] {broker:esm:<uuid>}:lease_expiry  hash shard -> Unix ms (Redis TIME)
-- KEYS[3] {broker:esm:<uuid>}:lease_epoch   hash shard -> integer
-- KEYS[4] {broker:esm:<uuid>}:meta
-- ARGV[1] replica id, ARGV[2] shard id, ARGV[3] ttl ms, ARGV[4] the mapping's generation the caller read
-- returns {1, epoch} if the caller holds the lease now, {0, owner} if another replica does, {0, ''}
-- if the mapping's position was set since the caller read it (it reads the checkpoints again first)
if (redis.call('HGET', KEYS[4], 'generation') or '0') ~= ARGV[4] then
  return {0, ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], ARGV[2])
local expiry = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if owner and owner ~= ARGV[1] and expiry > now then
  return {0, owner}
end
local epoch
if owner == ARGV[1] and expiry > now then
  epoch = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
else
  epoch = redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], now + tonumber(ARGV[3]))
return {1, epoch}
