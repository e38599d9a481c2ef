-- Spends one use of a grant, atomically. KEYS[1]: the grant key. ARGV[1]: the grant id the
-- caller holds. ARGV[2]: the caller's `now` (unix seconds; the injected clock, not Redis TIME).
-- Returns 1 if this call spent a use (or the grant is reusable), 0 otherwise.
--
-- The record is decoded only to check it; a counted grant is rewritten by replacing the
-- `"uses_left":N` member of the stored text (re-encoding with cjson would turn an empty `amr`
-- array into `{}`). The pattern cannot match inside a JSON string, where `"` is escaped.
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, g = pcall(cjson.decode, raw)
if not ok or type(g) ~= 'table' then
  return redis.error_reply('stepguard: unreadable grant record')
end
if g.id ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
local expires = tonumber(g.expires_at)
if not now or not expires or expires <= now then return 0 end
local uses = g.uses_left
if uses == nil or uses == cjson.null then return 1 end
uses = tonumber(uses)
if not uses or uses < 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
if uses == 1 then
  redis.call('DEL', KEYS[1])
  return 1
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = (expires - now) * 1000 end
local updated, n = string.gsub(raw, '"uses_left":%d+', '"uses_left":' .. string.format('%d', uses - 1), 1)
if n ~= 1 then
  return redis.error_reply('stepguard: grant record without uses_left')
end
redis.call('SET', KEYS[1], updated, 'PX', ttl)
return 1
