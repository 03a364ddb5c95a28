-- Write a checkpoint, fenced: only the live holder of the shard's lease at this epoch may.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- KEYS[4] {broker:esm:<uuid>}:checkpoints   hash shard -> sequence number or SHARD_END
-- ARGV[1] replica id, ARGV[2] shard id, ARGV[3] epoch, ARGV[4] sequence number
-- returns 1 if written, 0 if the caller no longer holds the lease (nothing written)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') ~= tonumber(ARGV[3]) then return 0 end
if tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') <= now then return 0 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
return 1
