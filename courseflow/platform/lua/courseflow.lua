#!lua name=courseflow
-- CourseFlow's Redis functions: one library, loaded on every master by courseflow.platform.functions.
-- Each function has one typed wrapper in courseflow.platform.library, the only place that names its keys and
-- arguments. Every function touches keys of one hash slot only, so each runs unchanged on Redis Cluster.

-- The fairness order's encoding, as courseflow/fairness.py defines it: score -priority, member
-- `<arrival ms, 15 digits>-<arrival seq, 10 digits>|<request json>`, so ZRANGE gives priority (higher first),
-- then arrival.
local function fairness_member(id, payload)
  local dash = string.find(id, '-', 1, true)
  local ms, seq = string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
  return string.rep('0', 15 - #ms) .. ms .. '-' .. string.rep('0', 10 - #seq) .. seq .. '|' .. payload
end

local function fairness_score(priority)
  return -tonumber(priority)
end

-- Append a request to its stream, its course's priority set and the pending index. `extra`: more entry fields
-- (the trace context) as a flat {name, value, ...} list.
local function enqueue(stream, zset, pending, request_id, payload, priority, extra)
  local id = redis.call('XADD', stream, '*', 'request', payload, unpack(extra))
  local member = fairness_member(id, payload)
  redis.call('ZADD', zset, fairness_score(priority), member)
  redis.call('HSET', pending, request_id, member)
  return id, member
end

local function set_with_ttl(key, value, ttl)
  if tonumber(ttl) > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end

-- Reply: {'claimed'} for a new key, else {'known', request id, fingerprint} of the request it already names.
local function claim_idempotency_key(keys, args)
  local key, request_id, fingerprint, ttl = keys[1], args[1], args[2], args[3]
  local prior = redis.call('GET', key)
  if prior then
    -- Written again, unchanged: a WAIT after this call then also covers the first write of the key.
    redis.call('SET', key, prior, 'KEEPTTL')
    local sep = string.find(prior, ' ', 1, true)
    return {'known', string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)}
  end
  set_with_ttl(key, request_id .. ' ' .. fingerprint, ttl)
  return {'claimed'}
end

local function release_idempotency_key(keys, args)
  local prior = redis.call('GET', keys[1])
  if prior and string.sub(prior, 1, #args[1] + 1) == args[1] .. ' ' then
    redis.call('DEL', keys[1])
  end
  return 0
end

-- Queue a request once: a request id queued before is only reported. The request's json is
-- `head .. priority .. tail`; priority '' = the one the registrar granted the student.
-- Reply: {outcome, 1-based queue place while pending}.
local function queue_request(keys, args)
  local courses, marker_key, stream, zset, pending, priorities, accepted =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]
  local request_id, head, tail, given, course_id, ttl, student_id =
    args[1], args[2], args[3], args[4], args[5], args[6], args[7]
  if redis.call('SISMEMBER', courses, course_id) == 0 then
    return {'unknown_course'}
  end
  local marker = redis.call('GET', marker_key)
  if marker then
    -- Written again, unchanged: a WAIT after this call then also covers the request queued before.
    redis.call('SET', marker_key, marker, 'KEEPTTL')
    local existing = redis.call('HGET', pending, request_id)
    if existing then
      return {'replayed', redis.call('ZRANK', zset, existing) + 1}
    end
    return {'replayed'}
  end
  local priority = given
  if priority == '' then
    priority = redis.call('HGET', priorities, student_id) or '0'
  end
  local _, member = enqueue(stream, zset, pending, request_id, head .. priority .. tail, priority, {unpack(args, 8)})
  redis.call('INCR', accepted)
  set_with_ttl(marker_key, course_id, ttl)
  return {'queued', redis.call('ZRANK', zset, member) + 1}
end

-- A granted priority applies only if newer than the one intake has: a late or repeated sync never undoes a
-- later grant. args: (student, priority, version) triples.
local function grant_priorities(keys, args)
  for i = 1, #args, 3 do
    local known = tonumber(redis.call('HGET', keys[2], args[i])) or 0
    if tonumber(args[i + 2]) > known then
      if args[i + 1] == '0' then
        redis.call('HDEL', keys[1], args[i])
      else
        redis.call('HSET', keys[1], args[i], args[i + 1])
      end
      redis.call('HSET', keys[2], args[i], args[i + 2])
    end
  end
  return 0
end

-- In one call, so a request arriving meanwhile cannot shift the cut. Reply: {1 if the worst-ranked of the
-- given members is within the first `limit`, else 0, the first `limit` members...}; {1} when none is left.
local function pending_through(keys, args)
  local limit = tonumber(args[1])
  local worst = -1
  for i = 2, #args do
    local rank = redis.call('ZRANK', keys[1], args[i])
    if rank and rank > worst then worst = rank end
  end
  if worst < 0 then return {1} end
  local members = redis.call('ZRANGE', keys[1], 0, limit - 1)
  table.insert(members, 1, worst < limit and 1 or 0)
  return members
end

-- Trim below the oldest entry still pending or, with none pending, below the last one delivered: never an
-- entry unacknowledged or unread. In one call, so no delivery slips in between.
local function trim_requests(keys, args)
  local group = args[1]
  local summary = redis.call('XPENDING', keys[1], group)
  local minid = nil
  if summary[1] > 0 then
    minid = summary[2]
  else
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', keys[1])) do
      local name, last
      for i = 1, #info, 2 do
        if info[i] == 'name' then name = info[i + 1] elseif info[i] == 'last-delivered-id' then last = info[i + 1] end
      end
      if name == group then minid = last end
    end
  end
  if minid == nil then return 0 end
  return redis.call('XTRIM', keys[1], 'MINID', minid)
end

-- Put a dead letter back at the end of the queue, as if just accepted. Reply: its new stream id, or false.
local function retry_dead_letter(keys, args)
  local dead_letters, stream, zset, pending = keys[1], keys[2], keys[3], keys[4]
  local entry_id, payload, priority, request_id = args[1], args[2], args[3], args[4]
  if redis.call('XDEL', dead_letters, entry_id) == 0 then
    return false
  end
  local id = enqueue(stream, zset, pending, request_id, payload, priority, {})
  return id
end

-- A sliding-window counter per limit: the current window's count plus the previous one's, weighted by how
-- much of it still overlaps the sliding window. One hash per limit: {start, current, previous}. A hit is
-- taken on every limit or on none. args: (amount, window ms) per key. Reply: {0} when taken, else
-- {1-based number of the limit that refused, milliseconds until it would take one}.
local function take_rate_limit(keys, args)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local states = {}
  for i = 1, #keys do
    local amount, window = tonumber(args[2 * i - 1]), tonumber(args[2 * i])
    local start = now - now % window
    local saved = redis.call('HMGET', keys[i], 'start', 'current', 'previous')
    local current, previous = tonumber(saved[2]) or 0, tonumber(saved[3]) or 0
    local saved_start = tonumber(saved[1]) or start
    if saved_start ~= start then
      previous = (saved_start == start - window) and current or 0
      current = 0
    end
    local elapsed = now - start
    if previous * (window - elapsed) / window + current + 1 > amount then
      local wait
      if current + 1 > amount then
        -- Not before the next window, and then until this window's count has faded enough.
        wait = window - elapsed + math.max(0, window * (1 - (amount - 1) / current))
      else
        wait = window * (1 - (amount - 1 - current) / previous) - elapsed
      end
      return {i, math.max(1, math.ceil(wait))}
    end
    states[i] = {start, current + 1, previous, window}
  end
  for i, state in ipairs(states) do
    redis.call('HSET', keys[i], 'start', state[1], 'current', state[2], 'previous', state[3])
    redis.call('PEXPIRE', keys[i], 2 * state[4])
  end
  return {0}
end

-- An enrollment's first step, in its caller's slot: take the caller's rate limits, then claim the idempotency
-- key, so a refused attempt claims nothing. keys: the limits' counters, then the idempotency key. args: (amount,
-- window ms) per counter, then the claim's (request id, fingerprint, ttl). Reply: {'limited', 1-based number of
-- the limit that refused, milliseconds until it would take one}, or claim_idempotency_key's.
local function admit_enrollment(keys, args)
  local limits = #keys - 1
  if limits > 0 then
    local refused = take_rate_limit({unpack(keys, 1, limits)}, {unpack(args, 1, 2 * limits)})
    if refused[1] ~= 0 then
      return {'limited', refused[1], refused[2]}
    end
  end
  return claim_idempotency_key({keys[#keys]}, {unpack(args, 2 * limits + 1)})
end

-- An enrollment in one call, where one server holds the caller's keys and the course's (a single Redis; on a
-- cluster they are two slots, and the two steps are two calls): admit_enrollment, then queue_request for the
-- request id it claimed. keys: admit's, then queue's. args: the number of admit's keys and of its args, admit's
-- args, then queue's. Reply: admit's when it refuses or the key names a request already (nothing is queued),
-- else queue_request's; a course it does not know lets the claim go, as the two calls do.
local function accept_enrollment(keys, args)
  local admit_keys, admit_args = tonumber(args[1]), tonumber(args[2])
  local admitted = admit_enrollment({unpack(keys, 1, admit_keys)}, {unpack(args, 3, 2 + admit_args)})
  if admitted[1] ~= 'claimed' then
    return admitted
  end
  local queue_args = {unpack(args, 3 + admit_args)}
  local queued = queue_request({unpack(keys, admit_keys + 1)}, queue_args)
  if queued[1] == 'unknown_course' then
    release_idempotency_key({keys[admit_keys]}, {queue_args[1]})
  end
  return queued
end

-- The shared replica horizon only moves forward, whichever API process raises it.
local function raise_horizon(keys, args)
  if tonumber(args[1]) > tonumber(redis.call('GET', keys[1]) or '0') then
    redis.call('SET', keys[1], args[1])
  end
  return 0
end

redis.register_function('claim_idempotency_key', claim_idempotency_key)
redis.register_function('release_idempotency_key', release_idempotency_key)
redis.register_function('queue_request', queue_request)
redis.register_function('grant_priorities', grant_priorities)
redis.register_function{function_name = 'pending_through', callback = pending_through, flags = {'no-writes'}}
redis.register_function('trim_requests', trim_requests)
redis.register_function('retry_dead_letter', retry_dead_letter)
redis.register_function('take_rate_limit', take_rate_limit)
redis.register_function('admit_enrollment', admit_enrollment)
redis.register_function('accept_enrollment', accept_enrollment)
redis.register_function('raise_horizon', raise_horizon)
