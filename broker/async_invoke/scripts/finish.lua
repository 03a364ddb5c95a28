-- An event reached its terminal outcome: acknowledge and delete its stream entry.
-- KEYS[1] stream        {broker:fn:<name>}:events
-- ARGV[1] consumer group
-- ARGV[2] stream entry id
-- returns 1 if the entry was still pending for the group, else 0
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
