-- The shared head of every line script: the rules of `flashsale_core::line::Line` that more
-- than one operation needs, over the keys `layout.rs` documents. KEYS: meta, pre, key, pos,
-- late, adm, bought, used, chain, idx, events (`LineKeys::all`). Times are Unix ms; every number stays below
-- LUA_EXACT_MAX, where Lua's doubles are exact.
local META, PRE, KEY, POS, LATE, ADM, BOUGHT, USED, CHAIN, IDX, EVENTS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11]

-- Numbers go into Redis and into answers as integer text. Lua's own conversion (`tostring`,
-- and Redis before 7.0 for arguments) gives 14 digits in float notation: 9.007199254741e+15.
local function int(n) return string.format('%d', n) end

-- An integer argument, refused (before anything is written) if Lua cannot hold it exactly.
local function arg_int(i)
  local n = tonumber(ARGV[i])
  if not n or n ~= math.floor(n) or math.abs(n) > LUA_EXACT_MAX then
    return error('line: argument ' .. i .. ' is not an exact integer: ' .. tostring(ARGV[i]))
  end
  return n
end

-- The line's meta, or nil when the sale has no line here (never set up, or lost).
local m = nil
local function load_meta()
  local v = redis.call('HMGET', META, 'opens_ms', 'starts_ms', 'ends_ms', 'admission_ms',
    'drawn', 'admitted_up_to', 'credit_milli', 'last_advance_ms', 'ended_up_to', 'paused', 'rate',
    'sold_out_after')
  if not v[1] then return nil end
  m = {
    opens = tonumber(v[1]), starts = tonumber(v[2]), ends = tonumber(v[3]),
    admission = tonumber(v[4]), drawn = v[5] == '1', admitted = tonumber(v[6]),
    credit = tonumber(v[7]), last_advance = v[8] and tonumber(v[8]) or nil,
    ended_up_to = tonumber(v[9]), paused = v[10] == '1', rate = v[11],
    sold_out_after = v[12] and tonumber(v[12]) or nil,
  }
  return m
end

local function pre_len() return redis.call('ZCARD', PRE) end
local function length() return pre_len() + redis.call('LLEN', LATE) end

-- The draw, once, at the start. The pre-queue is already in draw order (`line:pre`'s member
-- order), so nothing is sorted; the bucket starts full and no advance has happened yet.
local function draw_if_due(now)
  if m.drawn or now < m.starts then return end
  m.drawn, m.credit, m.last_advance = true, CREDIT_FULL_MILLI, nil
  redis.call('HSET', META, 'drawn', '1', 'credit_milli', int(CREDIT_FULL_MILLI))
  redis.call('HDEL', META, 'last_advance_ms')
end

-- A member's position after the draw, or nil.
local function position_of(line)
  local key = redis.call('HGET', KEY, line)
  if key then return redis.call('ZRANK', PRE, pre_member(key, line)) + 1 end
  local position = redis.call('HGET', POS, line)
  return position and tonumber(position) or nil
end

-- The i-th running admission (0-based, oldest first) as (when, up_to), or nil.
local function admission(i)
  local e = redis.call('ZRANGE', ADM, i, i, 'WITHSCORES')
  if #e == 0 then return nil end
  return tonumber(e[1]), tonumber(e[2])
end

-- Ends the admissions whose time is up, and chains their end (`Line::end_admissions`).
local function end_admissions(now)
  local ended = m.ended_up_to
  while true do
    local at, up_to = admission(0)
    if not at or at + m.admission > now then break end
    ended = up_to
    redis.call('ZREMRANGEBYRANK', ADM, 0, 0)
  end
  if ended ~= m.ended_up_to then
    m.ended_up_to = ended
    redis.call('HSET', META, 'ended_up_to', int(ended))
    redis.call('RPUSH', EVENTS, passed_event(ended))
  end
end

-- Admitted buyers whose admission runs at `now` and who have not bought (`Line::holders`).
-- The ended admissions are a prefix; `advance` removes them, so the scan is short.
local function holders(now)
  local first_live = m.ended_up_to + 1
  local i = 0
  while true do
    local at, up_to = admission(i)
    if not at then return 0 end
    if at + m.admission > now then break end
    first_live, i = up_to + 1, i + 1
  end
  local live = m.admitted + 1 - first_live
  local bought = redis.call('ZCOUNT', BOUGHT, first_live, '+inf')
  -- Never below 0 (positions that bought are admitted ones, so `Line` never goes there).
  return math.max(0, live - bought)
end

-- When the admission of an admitted position ends, or nil (`Line::admitted_until`).
local function admitted_until(position)
  if position == 0 or position <= m.ended_up_to or position > m.admitted then return nil end
  local e = redis.call('ZRANGEBYSCORE', ADM, position, '+inf', 'LIMIT', 0, 1)
  if #e == 0 then return nil end
  return tonumber(e[1]) + m.admission
end
