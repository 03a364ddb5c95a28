-- Remove the consumers of replicas that are gone: no pending entries (a dead replica's were
-- claimed by the living) and no read for longer than the claim timeout. Atomic, so a consumer
-- that reads in between keeps its entries.
-- KEYS[1] stream        {broker:fn:<name>}:events
-- ARGV[1] consumer group
-- ARGV[2] the calling consumer (kept)
-- ARGV[3] idle ms
-- returns the names removed
local removed = {}
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return removed end
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    table.insert(removed, f['name'])
  end
end
return removed
