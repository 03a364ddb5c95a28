-- Forget shards that ended and whose children have started (their checkpoints moved past them):
-- the checkpoint and every lease field go, so nothing grows with each reshard.
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- KEYS[4] {broker:esm:<uuid>}:checkpoints
-- ARGV    shard ids
-- returns the number of checkpoints removed
local removed = 0
for _, shard in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], shard)
  redis.call('HDEL', KEYS[2], shard)
  redis.call('HDEL', KEYS[3], shard)
  removed = removed + redis.call('HDEL', KEYS[4], shard)
end
return removed
