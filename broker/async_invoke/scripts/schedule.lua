-- Move an event from the stream to the delayed set, atomically (a retry after a wait).
-- KEYS[1] stream        {broker:fn:<name>}:events
-- KEYS[2] delayed set   {broker:fn:<name>}:delayed   (score: due time, Unix ms by Redis TIME)
-- ARGV[1] consumer group
-- ARGV[2] stream entry id being retired (acknowledged and deleted)
-- ARGV[3] event document (JSON) to schedule
-- ARGV[4] delay in milliseconds
-- returns the due time (Unix ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return due
