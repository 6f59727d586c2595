-- wrk script: POST the buy path with a different buyer token and idempotency key each time.
-- Env: BUY_PATH, TOKENS (file, one JWT per line).
local path = os.getenv("BUY_PATH")
-- A prefix unique to this wrk run, so keys never repeat across runs (repeats are replays).
local run = os.getenv("RUN") or "0"
-- Each buyer clicks REPEAT times in a row (impatient double clicks); 1 = every request a new buyer.
local repeat_n = tonumber(os.getenv("REPEAT") or "1")
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local counter = 0
-- Global, not local: thread:set() writes globals of each thread's Lua state.
thread_id = 0
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end

function request()
  counter = counter + 1
  local token = tokens[(math.floor(counter / repeat_n) * 7 + thread_id * 1000) % #tokens + 1]
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = run .. "t" .. thread_id .. "-" .. counter,
  })
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write("status counts are per thread; see server counters for totals\n")
end
