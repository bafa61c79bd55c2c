-- pdsmux merged-log append. One call appends a batch of events from one
-- source atomically: dedup, per-repo order, seq assignment, XADD of the
-- frame carrying its new seq, and the source replica's cursor.
--
-- Invariants kept here (see docs/invariants.md):
--   I1 seq strictly increases and is never reused: INCR on one counter,
--      seeded above every seq the stream has held when the counter is lost.
--   I2 (did, rev) is appended at most once: a #commit/#sync is appended
--      only when its rev is above the DID's last appended rev, in the same
--      atomic step that records the new rev.
--   I3 a replica's cursor only moves forward here, after its events are
--      appended or held in Redis; it never passes an event that is in
--      neither place.
--
-- KEYS: 1 seq, 2 log stream, 3 did state, 4 replica cursors, 5 hold queue,
--       6 meta, 7 time index, 8 account status, 9 repos flagged for repair,
--       10 the rev each rolled-back repo was rolled back from; then two per
--       event: its repo's held commits, its content-hash dedup marker; then
--       the held-commit index of each replica named after the events.
--       Every key the script touches is declared here (proxies and Redis
--       Cluster require it); all share one hash tag.
-- ARGV: 1 source replica ('' for none), 2 expected cursor ('' to skip the
--       check), 3 now (unix ms), 4 seq floor minus one, 5 hold ms, 6 dedup
--       ttl s, 7 lowest seq this caller may be given (one above every seq
--       it has seen), 8 event count n,
--       then 10 fields per event:
--       kind, did, rev, since, commit, hash, pre, suf, upstream seq, status
--       then the replicas whose held-commit index keys close KEYS (the
--       source replica among them).
-- kinds: c commit, s sync, i identity, a account, o other; R and Y are a
--       repair #commit / #sync whose `since` field is the rev the DID must
--       still be at; B is a repair #sync that rolls the repo back to an
--       older rev (only after the replica's signed head was checked to be
--       at that rev); F is an upstream event refused at the door (status
--       carries the reason; nothing but the flag is kept).
-- revLess(a, b) (rev a older than rev b, byte order) is prepended from
--       rev.go, shared with the other scripts.
-- Returns: one code per event (seq > 0 appended, 0 duplicate, -1 held,
--       -2 hold conflict, -3 repair lost its race, -4 flagged for repair),
--       then the number of held commits released by this call. Fails,
--       before writing anything, with NOT_RECONCILED (no marker),
--       LOST_WRITES (counter below ARGV 7 minus one), CURSOR_REGRESSED
--       (stored cursor below ARGV 2), or with
--       UNDECLARED_SOURCES and the missing replica names, before writing
--       anything, when a held commit of a batch repo came from a replica
--       whose index key was not passed: the caller adds it and retries.

local seqK, logK, didK, curK, holdqK, metaK, tidxK, acctK, fixK, rolledK =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local replica = ARGV[1]
local now = tonumber(ARGV[3])
local nowS = ARGV[3]
local holdMs = tonumber(ARGV[5])
local ttl = ARGV[6]
local n = tonumber(ARGV[8])

-- the declared per-event and per-replica keys, by did, hash and replica
-- (chained: repos whose held commits this call may append or drop)
local holdKeys, hashKeys, srcKeys, chained = {}, {}, {}, {}
local chainKinds = {c = true, s = true, R = true, Y = true, B = true}
for i = 0, n - 1 do
  local b = 9 + i * 10
  holdKeys[ARGV[b + 1]] = KEYS[11 + 2 * i]
  hashKeys[ARGV[b + 5]] = KEYS[12 + 2 * i]
  if chainKinds[ARGV[b]] then chained[ARGV[b + 1]] = true end
end
for j = 1, #KEYS - 10 - 2 * n do
  srcKeys[ARGV[8 + 10 * n + j]] = KEYS[10 + 2 * n + j]
end

local function num(x) return string.format('%.0f', x) end

-- I6: a Redis without the incarnation marker has lost pdsmux's state (or is
-- new): nothing may be appended until Reconcile has put the durable
-- checkpoint back, or old repos would look new and seq could repeat.
if redis.call('HEXISTS', metaK, 'incarnation') == 0 then
  return redis.error_reply('NOT_RECONCILED Redis holds no pdsmux state marker; waiting for reconcile')
end

-- I6 for a Redis that kept its marker but lost acknowledged writes (a
-- failover to a lagging replica, a node back from an older RDB or AOF and
-- promoted): its counter is below a seq this caller has appended or read,
-- and its repo states may be older than what subscribers were sent. A
-- repair or an upstream event judged against them would be sent again, so
-- nothing is appended until Reconcile has merged the checkpoint back and
-- raised the counter (cursor.Log.Reconcile).
local seenFloor = tonumber(ARGV[7])
do
  local c = redis.call('GET', seqK)
  if c and tonumber(c) < seenFloor - 1 then
    return redis.error_reply('LOST_WRITES seq counter ' .. c .. ' is below ' ..
      num(seenFloor - 1) .. ', a seq this process has seen (Redis lost writes)')
  end
end

if ARGV[2] ~= '' then
  local c = redis.call('HGET', curK, replica)
  if (not c) or tonumber(c) < tonumber(ARGV[2]) then
    return redis.error_reply('CURSOR_REGRESSED stored cursor ' .. tostring(c) ..
      ' is below ' .. ARGV[2] .. ' (Redis lost writes)')
  end
end

-- Every held commit this call may drop or release belongs to a repo of the
-- batch; its replica's index key must be declared before anything is
-- written (a script's writes are not undone by a later error).
do
  local missing, named = {}, {}
  local function need(r)
    if r ~= '' and not srcKeys[r] and not named[r] then
      named[r] = true
      missing[#missing + 1] = r
    end
  end
  need(replica)
  for did in pairs(chained) do
    for _, v in ipairs(redis.call('HVALS', holdKeys[did])) do need(cmsgpack.unpack(v)[6]) end
  end
  if #missing > 0 then
    return redis.error_reply('UNDECLARED_SOURCES ' .. table.concat(missing, ' '))
  end
end

-- I1: when the counter is gone (new log or lost state), start above both
-- the caller's floor (time and durable checkpoint) and the stream's top.
-- Checked once per call: the counter cannot vanish inside a script.
if redis.call('EXISTS', seqK) == 0 then
  local floor = tonumber(ARGV[4])
  if redis.call('EXISTS', logK) == 1 then
    local info = redis.call('XINFO', 'STREAM', logK)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local top = tonumber(string.match(info[i + 1], '^(%d+)'))
        if top > floor then floor = top end
      end
    end
  end
  redis.call('SET', seqK, num(floor))
  redis.call('HSETNX', metaK, 'created', nowS)
end

local function nextSeq()
  local seq = redis.call('INCR', seqK)
  -- I1: a seen seq is never handed out again. The LOST_WRITES check
  -- above covers a counter that is still there; this one a counter
  -- recreated in this call from a floor below what the caller has seen.
  if seq < seenFloor then
    redis.call('SET', seqK, ARGV[7])
    seq = seenFloor
  end
  return seq
end

local function srcKey(r) return srcKeys[r] end

-- I3 for the durable checkpoint: the upstream seq of the oldest event
-- from src still held (only in Redis) when an entry with useq is
-- appended, or nil. The checkpoint keeps src's cursor below it, so a
-- restore after Redis loses its holds re-reads them.
local function oldestHeld(src, useq)
  if src == '' or useq == '' then return nil end
  local low = redis.call('ZRANGE', srcKey(src), 0, 0, 'WITHSCORES')
  if #low == 2 and tonumber(low[2]) <= tonumber(useq) then return num(tonumber(low[2])) end
  return nil
end

-- The entry holds the frame as the bytes before ('p') and after ('q') its
-- seq value, which the reader fills in from the entry id, and, packed in
-- one field ('m'), what the durable archive needs besides it: kind, did,
-- rev, commit CID, source replica, its seq, account status, the append
-- time and, when there is one, oldestHeld, separated by spaces (none of
-- them contains one).
local bucket = num(math.floor(now / 60000))
local bucketDone = redis.call('HGET', metaK, 'bucket') == bucket
local function emit(kind, did, rev, commit, pre, suf, src, useq, status)
  local seq = nextSeq()
  local id = num(seq)
  local m = {kind, did, rev, commit, src, useq, status, nowS}
  m[9] = oldestHeld(src, useq)
  redis.call('XADD', logK, id .. '-0', 'p', pre, 'q', suf, 'm', table.concat(m, ' '))
  if kind == 'c' or kind == 's' then
    redis.call('HSET', didK, did, rev .. ' ' .. commit)
  end
  -- one time-index point a minute, for age-based trimming
  if not bucketDone then
    redis.call('HSET', metaK, 'bucket', bucket)
    redis.call('ZADD', tidxK, nowS, id)
    bucketDone = true
  end
  return seq
end

local released = 0
local function holdKey(did) return holdKeys[did] end

-- A repo leaves the hold queue once it has neither held commits nor a
-- repair flag.
local function unqueue(did)
  if redis.call('EXISTS', holdKey(did)) == 0 and redis.call('HEXISTS', fixK, did) == 0 then
    redis.call('ZREM', holdqK, did)
  end
end

-- I3: an event refused at the door (or a #sync rolling a repo back) is
-- replaced by a durable request to repair the repo from the replica's
-- signed head, due now; the cursor may then move past the event.
local function flag(did, reason, rev)
  redis.call('HSET', fixK, did, reason .. ' ' .. rev)
  redis.call('ZADD', holdqK, 'LT', nowS, did)
  return -4
end

-- Append every held commit that now chains onto rev, in chain order.
local function release(did, rev)
  local hk = holdKey(did)
  if redis.call('EXISTS', hk) == 0 then return end
  while true do
    local v = redis.call('HGET', hk, rev)
    if not v then break end
    local h = cmsgpack.unpack(v)
    redis.call('HDEL', hk, rev)
    if h[6] ~= '' then redis.call('ZREM', srcKey(h[6]), did .. ' ' .. rev) end
    emit('c', did, h[1], h[2], h[3], h[4], h[6], h[5], '')
    released = released + 1
    rev = h[1]
  end
  unqueue(did)
end

-- Forget every held commit of did (its history was replaced); returns
-- the highest rev among them (nil when none).
local function dropAllHeld(did)
  local hk = holdKey(did)
  local all = redis.call('HGETALL', hk)
  local top = nil
  for i = 1, #all, 2 do
    local h = cmsgpack.unpack(all[i + 1])
    if h[6] ~= '' then redis.call('ZREM', srcKey(h[6]), did .. ' ' .. all[i]) end
    if (not top) or revLess(top, h[1]) then top = h[1] end
  end
  redis.call('DEL', hk)
  unqueue(did)
  return top
end

-- Forget held commits at or below rev: a #sync or a repair covered them.
local function dropHeldUpTo(did, rev)
  local hk = holdKey(did)
  local all = redis.call('HGETALL', hk)
  for i = 1, #all, 2 do
    local h = cmsgpack.unpack(all[i + 1])
    if not revLess(rev, h[1]) then
      redis.call('HDEL', hk, all[i])
      if h[6] ~= '' then redis.call('ZREM', srcKey(h[6]), did .. ' ' .. all[i]) end
    end
  end
end

local function lastRev(did)
  local st = redis.call('HGET', didK, did)
  if not st then return nil end
  return string.match(st, '^(%S+)')
end

-- I2 across a rollback: the history a rollback replaced (revs up to the
-- one it rolled back from) is never appended again, whoever replays it.
local function replaced(did, rev)
  local r = redis.call('HGET', rolledK, did)
  return r and not revLess(r, rev)
end

local out = {}
local maxUseq = nil
for i = 0, n - 1 do
  local b = 9 + i * 10
  local kind, did, rev, since, commit, hash, pre, suf, useq, status =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4],
    ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  if useq ~= '' then
    local u = tonumber(useq)
    if (not maxUseq) or u > maxUseq then maxUseq = u end
  end
  local code = 0
  if kind == 'c' then
    local last = lastRev(did)
    if (last and not revLess(last, rev)) or replaced(did, rev) then
      code = 0 -- I2: already appended (or older, or rolled back)
    elseif (since == '' and not last) or (last and since == last) then
      code = emit('c', did, rev, commit, pre, suf, replica, useq, '')
      release(did, rev)
    else
      -- The chain is broken: hold until the missing commit arrives or the
      -- repair loop covers the gap (I3: held in Redis, so the cursor may move).
      local hk = holdKey(did)
      local ex = redis.call('HGET', hk, since)
      local keep = true
      if ex then
        local h = cmsgpack.unpack(ex)
        if h[1] == rev then
          keep, code = false, 0
        elseif revLess(rev, h[1]) then
          keep, code = false, -2
        elseif h[6] ~= '' then
          redis.call('ZREM', srcKey(h[6]), did .. ' ' .. since)
        end
      end
      if keep then
        redis.call('HSET', hk, since, cmsgpack.pack({rev, commit, pre, suf, useq, replica, now + holdMs}))
        redis.call('ZADD', holdqK, 'LT', num(now + holdMs), did)
        if replica ~= '' and useq ~= '' then
          redis.call('ZADD', srcKey(replica), useq, did .. ' ' .. since)
        end
        code = -1
      end
    end
  elseif kind == 'F' then
    code = flag(did, status, rev)
  elseif kind == 'B' then
    local last = lastRev(did)
    if (last or '') ~= since then
      code = -3
    else
      code = emit('s', did, rev, commit, pre, suf, replica, useq, '')
      local floor = last
      local top = dropAllHeld(did)
      if top and ((not floor) or revLess(floor, top)) then floor = top end
      if floor then
        local r = redis.call('HGET', rolledK, did)
        if (not r) or revLess(r, floor) then redis.call('HSET', rolledK, did, floor) end
      end
    end
  elseif kind == 's' or kind == 'R' or kind == 'Y' then
    local last = lastRev(did)
    if (kind == 'R' or kind == 'Y') and (last or '') ~= since then
      code = -3
    elseif kind == 's' and replaced(did, rev) and rev ~= last then
      code = 0 -- a copy from the history a rollback replaced
    elseif kind == 's' and last and revLess(rev, last) then
      -- An older rev: a copy of a #sync already appended (replicas replay
      -- each other's events), or a replica restored from backup
      -- announcing it; repair checks the latter against the signed head.
      if hash ~= '' and redis.call('EXISTS', hashKeys[hash]) == 1 then
        code = 0
      else
        code = flag(did, 'sync_rollback', rev)
      end
    elseif last and not revLess(last, rev) then
      code = 0
    else
      local ek = 's'
      if kind == 'R' then ek = 'c' end
      code = emit(ek, did, rev, commit, pre, suf, replica, useq, '')
      if kind == 's' and hash ~= '' then redis.call('SET', hashKeys[hash], '1', 'EX', ttl) end
      dropHeldUpTo(did, rev)
      release(did, rev)
    end
  else
    -- #identity, #account and unknown types: dedup by content without seq.
    if redis.call('SET', hashKeys[hash], '1', 'NX', 'EX', ttl) then
      code = emit(kind, did, rev, commit, pre, suf, replica, useq, status)
      if kind == 'a' then redis.call('HSET', acctK, did, status) end
    end
  end
  out[#out + 1] = code
end

if replica ~= '' and maxUseq then
  local c = redis.call('HGET', curK, replica)
  if (not c) or tonumber(c) < maxUseq then
    redis.call('HSET', curK, replica, num(maxUseq))
  end
end
out[#out + 1] = released
return out
