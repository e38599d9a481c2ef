-- Counts one event in each fixed-window counter of KEYS, in order: INCR, the TTL set when the
-- window's first event creates the counter. ARGV[2k-1]: the k-th counter's max (-1: none);
-- ARGV[2k]: its TTL in ms (until its window ends). Returns the counts, stopping after the first
-- counter over its max: the counters after it are neither created nor counted.
local counts = {}
for k = 1, #KEYS do
  local max, ttl = tonumber(ARGV[2 * k - 1]), ARGV[2 * k]
  local n = redis.call('INCR', KEYS[k])
  if n == 1 then redis.call('PEXPIRE', KEYS[k], ttl) end
  counts[k] = n
  if max >= 0 and n > max then break end
end
return counts
