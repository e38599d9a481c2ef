-- Stores a challenge if the store's caps admit it: checks the subject's open-challenge cap and
-- the transaction's loop guard and writes the challenge, atomically on one server. The call is a
-- list of operations, one per key (KEYS[k] goes with the k-th operation in ARGV, after ARGV[1] =
-- the caller's `now` in unix seconds). All checks run before any write; a refusal writes
-- nothing (but extends the loop guard it hit).
--
-- - `loop max ttl_ms`: the transaction's attempts since its last grant; at `max` (0: no cap)
--   -> {'loop', n, ttl_ms} (and the guard is extended), else it becomes n + 1.
-- - `open max digest expires_at ttl_ms`: the transactions with an open challenge for the
--   subject (a sorted set by expiry, expired members dropped); a new transaction when there
--   are `max` (0: no cap) -> {'open', 0, ms until the oldest expires}, else the transaction
--   is added (or its expiry moved) and the set lives at least `ttl_ms`.
-- - `record value ttl_ms`: SET the challenge record, its `"attempts":N` member set to the
--   attempts counted by `loop` in the same call.
-- - `set value ttl_ms`: SET a plain value (the id -> digest index, the latest challenge id).
--
-- Success -> {'ok', attempts, 0} (attempts 0 when no `loop` ran in this call).
local now = tonumber(ARGV[1])
local a = 2
local writes = {}
local attempts = 0
for k = 1, #KEYS do
  local key, op = KEYS[k], ARGV[a]
  if op == 'loop' then
    local max, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2]
    a = a + 3
    local n = tonumber(redis.call('GET', key) or '0') or 0
    if max > 0 and n >= max then
      redis.call('PEXPIRE', key, ttl)
      return {'loop', n, tonumber(ttl)}
    end
    attempts = n + 1
    writes[#writes + 1] = {'SET', key, tostring(attempts), 'PX', ttl}
  elseif op == 'open' then
    local max, member, expires, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
    a = a + 5
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if max > 0 and not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= max then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {'open', 0, (tonumber(oldest[2]) - now) * 1000}
    end
    writes[#writes + 1] = {'ZADD', key, expires, member}
    writes[#writes + 1] = {'KEEP', key, ttl}
  elseif op == 'record' then
    writes[#writes + 1] = {'RECORD', key, ARGV[a + 1], ARGV[a + 2]}
    a = a + 3
  elseif op == 'set' then
    writes[#writes + 1] = {'SET', key, ARGV[a + 1], 'PX', ARGV[a + 2]}
    a = a + 3
  else
    return redis.error_reply('stepguard: unknown issue operation')
  end
end
for _, w in ipairs(writes) do
  if w[1] == 'KEEP' then
    if redis.call('PTTL', w[2]) < w[3] then redis.call('PEXPIRE', w[2], w[3]) end
  elseif w[1] == 'RECORD' then
    local value = w[3]
    if attempts > 0 then
      value = string.gsub(value, '"attempts":%d+', '"attempts":' .. string.format('%d', attempts), 1)
    end
    redis.call('SET', w[2], value, 'PX', w[4])
  else
    redis.call(unpack(w))
  end
end
return {'ok', attempts, 0}
