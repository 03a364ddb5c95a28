-- Extend the leases the caller still holds at the same epochs: one call for all of a replica's
-- shards of a mapping.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- ARGV[1] replica id, ARGV[2] ttl ms, then pairs: ARGV[3 + 2i] shard id, ARGV[4 + 2i] epoch
-- returns the shard ids whose leases were lost (expired and taken, or released)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local shard = ARGV[i]
  if redis.call('HGET', KEYS[1], shard) ~= ARGV[1]
      or tonumber(redis.call('HGET', KEYS[3], shard) or '0') ~= tonumber(ARGV[i + 1])
      or tonumber(redis.call('HGET', KEYS[2], shard) or '0') <= now then
    lost[#lost + 1] = shard
  else
    redis.call('HSET', KEYS[2], shard, expiry)
  end
end
return lost
