-- Write back a checkpoint Redis lost, unless one is there again or the mapping's position was set
-- since the caller read it (its generation moved on).
-- KEYS[1] {broker:esm:<uuid>}:checkpoints, KEYS[2] {broker:esm:<uuid>}:meta
-- ARGV[1] shard id, ARGV[2] sequence number, ARGV[3] generation the caller read
-- returns 1 if written
if (redis.call('HGET', KEYS[2], 'generation') or '0') ~= ARGV[3] then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
