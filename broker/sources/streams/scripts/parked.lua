-- Writes to a shard's parked keys (IsolateFailingKeys), fenced like a checkpoint write: only the
-- live holder of the shard's lease may.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- KEYS[4] {broker:esm:<uuid>}:parked:<shard>  hash key -> attempts spent on its oldest record
-- KEYS[5] {broker:esm:<uuid>}:parked:<shard>:<key>  list of the key's records (JSON), oldest first
-- ARGV[1] replica id, ARGV[2] shard id, ARGV[3] epoch ('' without a lease), ARGV[4] key, ARGV[5] op:
--   "park": ARGV[6] attempts if the key was not parked yet, ARGV[7..] records appended in order
--   "failed": the oldest record failed again, ARGV[6] the attempts it has spent
--   "settle": the oldest record (sequence number ARGV[6]) is done: it leaves, and the key too once
--             its list is empty
-- returns 1, or 0 if the caller no longer holds the lease (nothing written)
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1]
      or tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') ~= tonumber(ARGV[3])
      or tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') <= now then
    return 0
  end
end
local key, op = ARGV[4], ARGV[5]
if op == 'park' then
  redis.call('HSETNX', KEYS[4], key, ARGV[6])
  for i = 7, #ARGV do
    redis.call('RPUSH', KEYS[5], ARGV[i])
  end
elseif op == 'failed' then
  redis.call('HSET', KEYS[4], key, ARGV[6])
else
  local head = redis.call('LINDEX', KEYS[5], 0)
  if head and cjson.decode(head)['s'] == ARGV[6] then
    redis.call('LPOP', KEYS[5])
  end
  if redis.call('LLEN', KEYS[5]) == 0 then
    redis.call('HDEL', KEYS[4], key)
  else
    redis.call('HSET', KEYS[4], key, 0)
  end
end
return 1
