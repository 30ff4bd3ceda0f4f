//! The Lua code Redis runs for Herald: one function library, each call one
//! atomic round trip.
//!
//! It is a library of Redis functions (`FUNCTION LOAD`, `FCALL`, Redis ≥ 7)
//! rather than `EVAL` scripts because a library keeps state for as long as
//! the Redis process lives: the process's run id, read once with `INFO`.
//! Every channel's meta hash records the run id of the Redis process that
//! wrote it; a process that finds another run id there knows the channel came
//! through a restart or a failover, which may have lost acknowledged writes
//! (`appendfsync everysec`, a replica that lagged), and starts the channel on
//! a new epoch before anything else. The check runs inside the Redis process
//! that holds the data, so no node can hold a stale idea of it, there is no
//! window between a restart and its detection, and on a Cluster each primary
//! judges its own slots. It costs nothing per call beyond reading one more
//! field of the meta hash.
//!
//! The library's name carries a hash of its code, so nodes of two Herald
//! versions (a rolling upgrade) each call their own code.

/// The library's code; [`library`] names it.
const LIBRARY: &str = r#"
-- This Redis process's run id. A library's locals live as long as the
-- library is loaded in the process, so INFO runs once, not on every call.
local incarnation = nil
local function run_id()
  if not incarnation then
    incarnation = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  end
  return incarnation
end

-- The channel's epoch and newest offset. The channel starts a new epoch,
-- empty and at offset 0, when it has none yet, when its meta was written by
-- another Redis process (a restart or a failover: acknowledged writes may be
-- lost), or when it is behind the position a node has already seen in its
-- epoch (floor_epoch, floor_offset; '' when the node has seen none). Returns
-- epoch, offset and why a new epoch was started ('' when it was not).
local function position(meta, stream, new_epoch, ttl, floor_epoch, floor_offset)
  local fields = redis.call('HMGET', meta, 'e', 'o', 'r')
  local epoch, top, writer = fields[1], tonumber(fields[2] or '0'), fields[3]
  local current = run_id()
  local reset = ''
  if not epoch then
    reset = 'new'
  elseif writer ~= current then
    reset = 'restart'
  elseif floor_epoch == epoch and top < tonumber(floor_offset) then
    reset = 'behind'
  end
  if reset ~= '' then
    -- The old epoch's entries are nobody's history any more, and offsets
    -- start again from 1.
    redis.call('DEL', stream)
    epoch, top = new_epoch, 0
    redis.call('HSET', meta, 'e', epoch, 'o', 0, 'r', current)
    redis.call('EXPIRE', meta, ttl)
  end
  return epoch, top, reset
end

-- The offset in a stream entry's id, `<offset>-0`.
local function offset_of(entry)
  return tonumber(string.match(entry[1], '^(%d+)'))
end

-- The time in ms a stream entry was appended (its first field, 't'); the
-- far future for an entry without one, which is then never trimmed by age.
-- Nothing here may fail: the publish has already appended.
local function time_of(entry)
  return tonumber(entry[2][2]) or math.huge
end

-- Trims by age: beyond the newest `size` entries (offsets up to
-- offset - size), entries older than min_age ms go. Readers apply the rule
-- exactly (HistoryConfig::keeps), so this only gives memory back and may
-- lag: it waits until the oldest entry is `slack` past due, then trims
-- everything due in one XTRIM, so the search below runs about once per
-- slack per busy channel rather than on every publish. Offsets follow each
-- other in a stream, and times grow with them, so the last entry to go is
-- found by bisection, one single-entry XRANGE per step.
local function trim_by_age(stream, offset, size, min_age, now)
  local floor = offset - size
  if min_age <= 0 or floor < 1 then return end
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if not oldest then return end
  local cutoff = now - min_age
  local slack = math.max(1000, math.floor(min_age / 8))
  local lo = offset_of(oldest)
  if not lo or lo > floor or time_of(oldest) >= cutoff - slack then return end
  -- The entry at lo is due; find the newest due entry up to floor.
  local hi = floor
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    local entry = redis.call('XRANGE', stream, mid .. '-0', '+', 'COUNT', 1)[1]
    if entry and time_of(entry) < cutoff then
      lo = mid
    else
      hi = mid - 1
    end
  end
  redis.call('XTRIM', stream, 'MINID', (lo + 1) .. '-0')
end

-- Appends `data` to the channel's stream with the next offset and
-- publishes it: a publish once its idempotency key was checked, and a
-- presence event. `args` are the publish's (see below; its data aside).
-- Returns epoch, offset and why a new epoch was started ('' when not).
--
-- Redis does not undo a function's writes when a command in it fails, so
-- nothing is written before XADD, the one command that can fail (a key of
-- the wrong type, out of memory): a failed publish burns no offset.
local function append(meta, stream, data, args)
  local epoch, top, reset = position(meta, stream, args[4], args[3], args[8], args[9])
  local offset = top + 1
  if tonumber(args[11]) > 0 then
    local now = redis.call('TIME')
    local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    -- The cap, trimmed by whole stream nodes: cheap, and never below it.
    redis.call('XADD', stream, 'MAXLEN', '~', args[11], offset .. '-0', 't', ms, 'd', data)
    trim_by_age(stream, offset, tonumber(args[2]), tonumber(args[10]), ms)
    redis.call('EXPIRE', stream, args[3])
  end
  redis.call('HSET', meta, 'o', offset)
  redis.call('EXPIRE', meta, args[3])
  local command = 'PUBLISH'
  if args[6] == 's' then command = 'SPUBLISH' end
  redis.call(command, args[5], epoch .. ' ' .. offset .. ' ' .. data)
  return epoch, offset, reset
end

-- Appends a message and publishes it.
--
-- KEYS: meta, stream, the idempotency key's key (the meta key again when
-- there is none). ARGV: data, history size, TTL in seconds, the epoch to
-- start if the channel needs one, the pub/sub channel, 's' for sharded
-- pub/sub, the idempotency TTL in seconds ('' for no key), the floor epoch
-- and offset ('' ''), history min_age in ms, the most entries kept (the cap;
-- 0 keeps none). Returns {epoch, offset, 1 if a duplicate else 0, why a new
-- epoch was started or ''}.
redis.register_function('HERALD_LIB_publish', function(keys, args)
  if args[7] ~= '' then
    local earlier = redis.call('GET', keys[3])
    if earlier then
      local space = string.find(earlier, ' ')
      return {string.sub(earlier, 1, space - 1), tonumber(string.sub(earlier, space + 1)), 1, ''}
    end
  end
  local epoch, offset, reset = append(keys[1], keys[2], args[1], args)
  if args[7] ~= '' then
    redis.call('SET', keys[3], epoch .. ' ' .. offset, 'EX', args[7])
  end
  return {epoch, offset, 0, reset}
end)

-- Presence (engine/redis/presence.rs). A presence channel's members live
-- beside its stream, in its slot: `users` (user id -> how many
-- connections it has there), `infos` (user id -> its user_info JSON), and
-- per node `conns` (connection id -> user id), so that a dead node's
-- connections can be found and removed without touching the others'.
-- Member events are appended and published as messages, tagged as
-- message.rs stores tags: NUL, event, NUL, excluded connection, NUL, data.

local function member_added(conn, user, info)
  return '\0pusher_internal:member_added\0' .. conn .. '\0{"user_id":' .. cjson.encode(user) .. ',"user_info":' .. info .. '}'
end

local function member_removed(user)
  return '\0pusher_internal:member_removed\0\0{"user_id":' .. cjson.encode(user) .. '}'
end

-- One connection's membership ends; the user's last one publishes its leave.
local function leave(keys, args, conn)
  local user = redis.call('HGET', keys[5], conn)
  if not user then return 0 end
  redis.call('HDEL', keys[5], conn)
  if redis.call('HINCRBY', keys[3], user, -1) <= 0 then
    redis.call('HDEL', keys[3], user)
    redis.call('HDEL', keys[4], user)
    append(keys[1], keys[2], member_removed(user), args)
    return 1
  end
  return 0
end

-- Joins a connection to a presence channel.
--
-- KEYS: meta, stream, users, infos, this node's conns. ARGV: as a
-- publish's (ARGV[1] unused), then the connection id, the user id and its
-- user_info JSON. The user's first connection publishes member_added,
-- which skips that connection. Returns {epoch, offset, why a new epoch was
-- started or '', the members as HGETALL infos, 1 if the user joined the
-- channel now}: the list and the position are read together, so the events
-- after the position are exactly the changes since the list.
redis.register_function('HERALD_LIB_presence_join', function(keys, args)
  local conn, user, info = args[12], args[13], args[14]
  local epoch, offset, reset
  local news = false
  if redis.call('HSETNX', keys[5], conn, user) == 1 then
    news = redis.call('HINCRBY', keys[3], user, 1) == 1
    redis.call('HSET', keys[4], user, info)
  end
  if news then
    epoch, offset, reset = append(keys[1], keys[2], member_added(conn, user, info), args)
  else
    epoch, offset, reset = position(keys[1], keys[2], args[4], args[3], args[8], args[9])
    redis.call('EXPIRE', keys[1], args[3])
  end
  return {epoch, offset, reset, redis.call('HGETALL', keys[4]), news and 1 or 0}
end)

-- Ends a connection's membership (KEYS as a join's; ARGV a publish's, then
-- the connection id). Doing it again does nothing. Returns 1 when the user
-- left the channel.
redis.register_function('HERALD_LIB_presence_leave', function(keys, args)
  return leave(keys, args, args[12])
end)

-- Ends every membership a dead node held on a channel, and its occupancy
-- (KEYS as a join's with the dead node's conns, then the channel's
-- occupancy hash; ARGV a publish's, then the dead node's id). Returns {the
-- users who left, 1 if the channel is vacated now}.
redis.register_function('HERALD_LIB_presence_reap', function(keys, args)
  local left = {}
  for _, conn in ipairs(redis.call('HKEYS', keys[5])) do
    local user = redis.call('HGET', keys[5], conn)
    if leave(keys, args, conn) == 1 then
      table.insert(left, user)
    end
  end
  redis.call('DEL', keys[5])
  local vacated = 0
  if redis.call('HDEL', keys[6], args[12]) == 1 and redis.call('HLEN', keys[6]) == 0 then
    vacated = 1
  end
  return {left, vacated}
end)

-- Whether a channel has subscribers on any node, for sites that want to be
-- told (webhooks). KEYS: the channel's occupancy hash (node -> 1). ARGV:
-- the node, 1 when it has its first subscriber or 0 when its last left.
-- Returns 1 when the channel is occupied now, 2 when it is vacated now, 0
-- otherwise.
redis.register_function('HERALD_LIB_occupancy', function(keys, args)
  if args[2] == '1' then
    if redis.call('HSET', keys[1], args[1], 1) == 1 and redis.call('HLEN', keys[1]) == 1 then
      return 1
    end
  elseif redis.call('HDEL', keys[1], args[1]) == 1 and redis.call('HLEN', keys[1]) == 0 then
    return 2
  end
  return 0
end)

-- A node's heartbeat. KEYS: the nodes sorted set (node -> its last
-- heartbeat, Redis' clock in ms). ARGV: the node's id, the timeout in ms.
-- Returns {1 if the node was known else 0, the nodes found dead}: each dead
-- node is taken out of the set by this call, so one node reaps it.
redis.register_function('HERALD_LIB_presence_heartbeat', function(keys, args)
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local known = redis.call('ZSCORE', keys[1], args[1]) and 1 or 0
  redis.call('ZADD', keys[1], ms, args[1])
  local dead = redis.call('ZRANGEBYSCORE', keys[1], '-inf', ms - tonumber(args[2]))
  for _, node in ipairs(dead) do
    redis.call('ZREM', keys[1], node)
  end
  return {known, dead}
end)

-- Counts a node's memberships per channel (KEYS: the node's index hash;
-- ARGV: the channel, +1 or -1), dropping channels back at 0: how a dead
-- node's channels are found. Each connection counts up before its join
-- and down after its leave, so the count is never below the truth.
redis.register_function('HERALD_LIB_presence_index', function(keys, args)
  if redis.call('HINCRBY', keys[1], args[1], args[2]) <= 0 then
    redis.call('HDEL', keys[1], args[1])
  end
  return 0
end)

-- Reads a channel's position and the history after an offset.
--
-- KEYS: meta, stream. ARGV: the epoch to start if the channel needs one, TTL
-- in seconds, the offset to read after ('' reads the position only: a fresh
-- subscriber needs no history, and the stream may be megabytes), the most
-- entries to return, the floor epoch and offset ('' ''). Returns {epoch,
-- newest offset, now in ms, entries, why a new epoch was started or ''},
-- entries as XRANGE's [[id, [field, value, ...]], ...].
--
-- A channel read before anything was published gets its epoch here, so that
-- the position a subscriber is given stays valid; and every read keeps the
-- position alive for another TTL, so that a watched channel keeps its epoch.
redis.register_function('HERALD_LIB_read', function(keys, args)
  local epoch, top, reset = position(keys[1], keys[2], args[1], args[2], args[5], args[6])
  redis.call('EXPIRE', keys[1], args[2])
  local entries = {}
  -- Compared as numbers: an offset past the newest (up to 2^64-1 from a
  -- client) has nothing after it, and is no stream id to ask XRANGE about.
  if args[3] ~= '' and tonumber(args[3]) < top then
    entries = redis.call('XRANGE', keys[2], '(' .. args[3] .. '-0', '+', 'COUNT', args[4])
  end
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  return {epoch, top, ms, entries, reset}
end)
"#;

/// The library as Herald loads it, and the names of its functions.
#[derive(Debug, Clone)]
pub(crate) struct Library {
    /// The code for `FUNCTION LOAD`, with its `#!lua name=…` line.
    pub code: String,
    /// Appends and publishes (see `publish` in the code).
    pub publish: String,
    /// Reads the position and history (see `read` in the code).
    pub read: String,
    /// Presence: joins, leaves, a dead node's reaping, heartbeats and
    /// each node's index of its channels (see `presence_*` in the code).
    pub presence_join: String,
    pub presence_leave: String,
    pub presence_reap: String,
    pub presence_heartbeat: String,
    pub presence_index: String,
    /// A channel's occupancy across nodes (see `occupancy` in the code).
    pub occupancy: String,
}

/// Names the library after a hash of its code: `herald_<hash>`, its
/// functions `herald_<hash>_publish`, `herald_<hash>_read` and so on.
pub(crate) fn library() -> Library {
    let hash = fred::util::sha1_hash(LIBRARY);
    let name = format!("herald_{}", &hash[..12]);
    Library {
        code: format!(
            "#!lua name={name}\n{}",
            LIBRARY.replace("HERALD_LIB", &name)
        ),
        publish: format!("{name}_publish"),
        read: format!("{name}_read"),
        presence_join: format!("{name}_presence_join"),
        presence_leave: format!("{name}_presence_leave"),
        presence_reap: format!("{name}_presence_reap"),
        presence_heartbeat: format!("{name}_presence_heartbeat"),
        presence_index: format!("{name}_presence_index"),
        occupancy: format!("{name}_occupancy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_names_its_functions() {
        let library = library();
        assert!(library.code.starts_with("#!lua name=herald_"));
        assert!(!library.code.contains("HERALD_LIB"));
        for function in [
            &library.publish,
            &library.read,
            &library.presence_join,
            &library.presence_leave,
            &library.presence_reap,
            &library.presence_heartbeat,
            &library.presence_index,
            &library.occupancy,
        ] {
            assert!(
                library.code.contains(&format!("'{function}'")),
                "{function}"
            );
        }
    }
}
