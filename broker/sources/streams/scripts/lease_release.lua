-- Give a lease up (graceful handoff), only if the caller holds it at this epoch.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- ARGV[1] replica id, ARGV[2] shard id, ARGV[3] epoch
-- returns 1 if released, 0 if it was not the caller's
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') ~= tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
