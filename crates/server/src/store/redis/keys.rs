//! Every key and script MatchStream uses in Redis (README, "How MatchStream uses Redis", lists
//! them for operators). A match's keys carry its id as a `{hash tag}`, so a Redis Cluster keeps
//! each match on one shard (its scripts touch only that shard) and spreads matches over shards.

use crate::model::MatchId;

/// Set of the ids of matches still to be played or under way (SPEC 10: what a node loads on
/// start, and what resync compares every few seconds). A create adds the id before its script
/// (a match is never live without being listed); members whose meta hash is gone are
/// cancelled matches, which nodes skip.
pub(super) const LIVE: &str = "ms:live";
/// Set of the ids of ended matches: read once by a node on start (so that it knows they
/// exist), never by resync. A match moves here from [`LIVE`] once its `stop` is durable and its
/// final state saved; not in its scripts (in a Redis Cluster these sets live on other shards
/// than the match's keys) but by a separate, idempotent command of whichever node sees it end,
/// or finds an ended match still in [`LIVE`].
pub(super) const ENDED: &str = "ms:ended";
/// The one set of every match of a deployment before [`LIVE`] and [`ENDED`]: still read as
/// live, and emptied as its matches are found ended (moved) or cancelled (removed).
pub(super) const LEGACY_MATCHES: &str = "ms:matches";
/// Hash of node id -> `<reported at, Redis ms>|<load JSON>`: the cluster's viewer ports.
pub(super) const NODES: &str = "ms:nodes";
/// Pub/sub channel (not a key) on which every change to the log is announced.
pub(super) const CHANNEL: &str = "ms:log";

/// Counter of the match id's incarnations (never deleted: an incarnation is never reused).
pub(super) fn inc(id: &MatchId) -> String {
    format!("ms:{{{id}}}:inc")
}

/// Hash: `info` (JSON), `inc`, `seq` (last in the log), `tag` (of the append that wrote it),
/// `lts` (the `ts` of the event at `seq`), `saved` and `saved_seq` (the match's state at that
/// seq, `store/saved.rs`).
pub(super) fn meta(id: &MatchId) -> String {
    format!("ms:{{{id}}}:meta")
}

/// Stream: one entry per event, entry id `<seq>-0`, fields `ts`, `k` (kind), `d` (data JSON).
pub(super) fn log(id: &MatchId) -> String {
    format!("ms:{{{id}}}:log")
}

/// Creates a match unless one is live. KEYS: meta, inc, log. ARGV: info, channel, message
/// prefix (the script appends the incarnation and `}`), a random token naming this create.
/// Returns the incarnation, or -1. The same create sent again (a client resending after a lost
/// answer) answers the incarnation it created.
pub(super) const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = redis.call('HMGET', KEYS[1], 'ctag', 'inc')
  if m[1] == ARGV[4] then return tonumber(m[2]) end
  return -1
end
local inc = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[1], 'info', ARGV[1], 'inc', inc, 'seq', 0, 'tag', '', 'ctag', ARGV[4])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. inc .. '}')
return inc
";

/// Whose turn it is to append to a match (a node id, with an expiry): set by a writer whose
/// append conflicted, so that it goes next (see `APPEND`).
pub(super) fn turn(id: &MatchId) -> String {
    format!("ms:{{{id}}}:turn")
}

/// How long a writer whose append conflicted holds the match's turn at most (ms): long enough to
/// read what it missed and send again, short enough that a node that died holding it does not
/// stall the others for long.
pub(super) const TURN_MS: u64 = 250;

/// Appends events if the log ends as expected. KEYS: meta, log, turn. ARGV: inc, expected seq,
/// expected tag ('' = any), new tag, channel, message ('' = announce later), writer (node id),
/// turn length (ms), expected `ts` of the event at the expected seq ('' = any; a log written
/// before `lts` was kept matches any), then ts, kind, data per event. Returns {0, new last seq}, {-1} (no such
/// incarnation), {-2, last seq} (the log ends elsewhere) or {-3, last seq} (another writer's
/// turn). The first event of each append carries the append's tag (`g`): the same append sent
/// again (a client resending a pipeline after a lost answer) finds itself and answers as it did,
/// instead of being taken for someone else's write.
///
/// Turns make contention fair: a writer refused with -2 takes the match's turn (unless another
/// holds it), and until it has appended (or the turn expires) everyone else's appends are
/// refused with -3. Without them, a node whose watcher sends its next request the moment the
/// last is answered always wins the race against a node that must first read what it missed.
pub(super) const APPEND: &str = r"
local m = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'tag', 'lts')
if not m[1] or m[1] ~= ARGV[1] then return {-1} end
local seq = tonumber(m[2])
local expected = tonumber(ARGV[2])
if expected ~= seq or (ARGV[3] ~= '' and ARGV[3] ~= m[3])
    or (ARGV[9] ~= '' and m[4] and ARGV[9] ~= m[4]) then
  if expected < seq then
    local e = redis.call('XRANGE', KEYS[2], (expected + 1) .. '-0', (expected + 1) .. '-0')
    if e[1] then
      local f = e[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'g' and f[i + 1] == ARGV[4] then return {0, expected + (#ARGV - 9) / 3} end
      end
    end
  end
  redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[8], 'NX')
  return {-2, seq}
end
local turn = redis.call('GET', KEYS[3])
if turn and turn ~= ARGV[7] then return {-3, seq} end
for i = 10, #ARGV, 3 do
  seq = seq + 1
  if i == 10 then
    redis.call('XADD', KEYS[2], seq .. '-0', 'ts', ARGV[i], 'k', ARGV[i + 1], 'd', ARGV[i + 2],
      'g', ARGV[4])
  else
    redis.call('XADD', KEYS[2], seq .. '-0', 'ts', ARGV[i], 'k', ARGV[i + 1], 'd', ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[1], 'seq', seq, 'tag', ARGV[4], 'lts', ARGV[#ARGV - 2])
if turn then redis.call('DEL', KEYS[3]) end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {0, seq}
";

/// Gives the turn back if `writer` holds it (a writer that took it and then had nothing to
/// append: its events were refused after it read what it missed). KEYS: turn. ARGV: writer.
pub(super) const GIVE_TURN_BACK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// Cancels an incarnation. KEYS: meta, log, inc. ARGV: inc, channel, message. Returns 1, or 0
/// when that incarnation is not live. The latest incarnation, no longer live, was cancelled
/// already (by this same request sent again, or by another): that answers 1 too.
pub(super) const CANCEL: &str = r"
local live = redis.call('HGET', KEYS[1], 'inc')
if not live and redis.call('GET', KEYS[3]) == ARGV[1] then return 1 end
if live ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// A match and its log (or a page of it), read at one moment. KEYS: meta, log. ARGV: first
/// entry id, count (-1 = all). Returns {info, inc, entries} or {} when not live.
pub(super) const READ: &str = r"
local m = redis.call('HMGET', KEYS[1], 'info', 'inc')
if not m[1] then return {} end
local entries
if tonumber(ARGV[2]) < 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+')
else
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {m[1], m[2], entries}
";

/// A match from its saved state: the state and the log after it. KEYS: meta, log. Returns
/// {info, inc, saved ('' = none), entries} or {} when not live. A saved state beyond the log
/// (a Redis that came back with less) is not used.
pub(super) const RESUME: &str = r"
local m = redis.call('HMGET', KEYS[1], 'info', 'inc', 'seq', 'saved', 'saved_seq')
if not m[1] then return {} end
local from = 0
local saved = ''
local at = tonumber(m[5])
if m[4] and at and at <= tonumber(m[3]) then
  from = at
  saved = m[4]
end
local entries = redis.call('XRANGE', KEYS[2], (from + 1) .. '-0', '+')
return {m[1], m[2], saved, entries}
";

/// Saves a match's state. KEYS: meta. ARGV: inc, seq, state JSON. Kept only for the live
/// incarnation, a seq its log has reached, and no older than the state saved. Returns 1 (kept,
/// or an older one than the state saved), 2 when the log has not reached that seq (a node that
/// has not yet noticed a rewind: the state is not kept, nor the match marked ended), or 0 when
/// that incarnation is not live.
pub(super) const SAVE: &str = r"
local m = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'saved_seq')
if not m[1] or m[1] ~= ARGV[1] then return 0 end
local s = tonumber(ARGV[2])
if s > tonumber(m[2]) then return 2 end
if m[3] and tonumber(m[3]) > s then return 1 end
redis.call('HSET', KEYS[1], 'saved', ARGV[3], 'saved_seq', s)
return 1
";

/// A node's report. KEYS: nodes hash. ARGV: node id, load JSON. Stamped with Redis's clock.
pub(super) const REPORT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
return now
";

/// Nodes that reported within ARGV[1] ms; entries silent for ARGV[2] ms are deleted.
/// KEYS: nodes hash. Returns the live entries' load JSON.
pub(super) const LIVE_NODES: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local bar = string.find(all[i + 1], '|', 1, true)
  local at = tonumber(string.sub(all[i + 1], 1, bar - 1))
  if now - at <= tonumber(ARGV[1]) then
    table.insert(out, string.sub(all[i + 1], bar + 1))
  elseif now - at > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
";
