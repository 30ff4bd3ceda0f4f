//! The Lua scripts: each is one atomic round trip.

/// Appends a message and publishes it.
///
/// KEYS: meta, stream, the idempotency key's key (the meta key again when
/// there is none). ARGV: data, max history length (0 keeps none), TTL in
/// seconds, the epoch to start with if the channel has none, the pub/sub
/// channel, `s` for sharded pub/sub, the idempotency TTL in seconds (empty:
/// no key). Returns `{epoch, offset, 1 if a duplicate else 0}`.
///
/// Assigning the offset, appending and publishing in one script means a
/// message is either in history and on its way to subscribers, or nowhere;
/// checking and recording the idempotency key in it means two retries
/// cannot both publish.
pub(crate) const PUBLISH: &str = r#"
if ARGV[7] ~= '' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then
    local space = string.find(earlier, ' ')
    return {string.sub(earlier, 1, space - 1), tonumber(string.sub(earlier, space + 1)), 1}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if tonumber(ARGV[2]) > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], offset .. '-0', 't', ms, 'd', ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local command = 'PUBLISH'
if ARGV[6] == 's' then command = 'SPUBLISH' end
redis.call(command, ARGV[5], epoch .. ' ' .. offset .. ' ' .. ARGV[1])
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[3], epoch .. ' ' .. offset, 'EX', ARGV[7])
end
return {epoch, offset, 0}
"#;

/// Reads a channel's position and the history after an offset.
///
/// KEYS: meta, stream. ARGV: the epoch to create the channel with if it has
/// none, TTL in seconds, the offset to read after (empty: from the oldest),
/// the most entries to return. Returns `{epoch, last offset, now in ms,
/// entries}` where entries is XRANGE's `[[id, [field, value, …]], …]`.
///
/// A channel that is read before anything was published gets its epoch
/// here, so that the position a subscriber is given stays valid.
pub(crate) const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local from = '-'
if ARGV[3] ~= '' then from = '(' .. ARGV[3] .. '-0' end
local entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', ARGV[4])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, top, ms, entries}
"#;
