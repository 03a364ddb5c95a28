-- Move delayed events whose time has come back onto the stream, atomically.
-- KEYS[1] stream        {broker:fn:<name>}:events
-- KEYS[2] delayed set   {broker:fn:<name>}:delayed
-- ARGV[1] at most this many
-- returns the number of events moved
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, doc in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'e', doc)
  redis.call('ZREM', KEYS[2], doc)
end
return #due
