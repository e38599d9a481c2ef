-- Adds an entry to a journal (a sorted set scored by each entry's expiry), drops expired
-- entries and all but the ARGV[4] expiring last, and keeps the key until its last entry expires
-- (a TTL relative to the caller's clock, like every other key: Redis's clock is not ours).
-- KEYS[1] journal; ARGV[1] until (ms), ARGV[2] entry, ARGV[3] now (ms), ARGV[4] max entries.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - tonumber(ARGV[3])))
end
return redis.call('ZCARD', KEYS[1])
