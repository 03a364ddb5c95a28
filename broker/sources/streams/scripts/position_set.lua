-- Set a stream mapping's position (a rewind), fencing every consumer running it: each shard's lease
-- is freed at a new epoch (so a holder's next checkpoint write or renewal is refused and it stops),
-- the checkpoints are set, and the mapping's generation goes up (a replica that read the mapping's
-- state before this cannot take a lease or write a checkpoint back from that read).
-- KEYS[1] lease_owner, KEYS[2] lease_expiry, KEYS[3] lease_epoch (see lease_acquire.lua)
-- KEYS[4] {broker:esm:<uuid>}:checkpoints, KEYS[5] {broker:esm:<uuid>}:meta
-- ARGV[1] "start": every shard starts again at the position ARGV[2] (JSON) and the shards listed at
--         the next start take it;
--         "sequences": ARGV[3] (JSON list) shards read again from their start (children of shards
--         set), then pairs ARGV[4 + 2i] shard, ARGV[5 + 2i] sequence number to resume after
-- returns the new generation
for _, shard in ipairs(redis.call('HKEYS', KEYS[1])) do
  redis.call('HINCRBY', KEYS[3], shard, 1)
end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] == 'start' then
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[5], 'position', ARGV[2])
  redis.call('HDEL', KEYS[5], 'initial_shards')
else
  local again = cjson.decode(ARGV[3])
  local initial = redis.call('HGET', KEYS[5], 'initial_shards')
  if initial then
    local drop = {}
    for _, shard in ipairs(again) do
      drop[shard] = true
      redis.call('HDEL', KEYS[4], shard)
    end
    local kept = {}
    for _, shard in ipairs(cjson.decode(initial)) do
      if not drop[shard] then kept[#kept + 1] = shard end
    end
    redis.call('HSET', KEYS[5], 'initial_shards', #kept > 0 and cjson.encode(kept) or '[]')
  else
    for _, shard in ipairs(again) do redis.call('HDEL', KEYS[4], shard) end
  end
  for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
end
return redis.call('HINCRBY', KEYS[5], 'generation', 1)
