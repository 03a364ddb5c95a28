-- Events reached their terminal outcomes: acknowledge and delete their stream entries. Several
-- callers in one call.
-- KEYS[1] stream        {broker:fn:<name>}:events
-- ARGV, two per caller: consumer group, stream entry id
-- returns, per caller, 1 if the entry was still pending for the group, else 0
local replies = {}
for i = 1, #ARGV, 2 do
  replies[#replies + 1] = redis.call('XACK', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('XDEL', KEYS[1], ARGV[i + 1])
end
return replies
