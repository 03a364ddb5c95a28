-- Extend a lease the caller still holds at the same epoch.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- ARGV[1] replica id, ARGV[2] shard id, ARGV[3] ttl ms, ARGV[4] epoch
-- returns 1 if renewed, 0 if the lease was lost (expired and taken, or released)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0') ~= tonumber(ARGV[4]) then return 0 end
if tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') <= now then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], now + tonumber(ARGV[3]))
return 1
