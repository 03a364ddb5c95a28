-- Permits in use (live holders only), for metrics.
-- KEYS[1] pool
-- returns the number of unexpired holders
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
