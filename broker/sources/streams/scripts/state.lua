-- A stream mapping's state in one read: its checkpoints and its generation and position (see
-- position_set.lua), so a replica never pairs checkpoints with the wrong generation.
-- KEYS[1] {broker:esm:<uuid>}:checkpoints, KEYS[2] {broker:esm:<uuid>}:meta
-- returns {checkpoints as a flat list, generation or false, position JSON or false}
return {redis.call('HGETALL', KEYS[1]), redis.call('HGET', KEYS[2], 'generation'),
        redis.call('HGET', KEYS[2], 'position')}
