-- wrk script for the fair line (issue 14): joins or line/me, one buyer token per request.
-- Env: SALE (sale id), MODE ("join" or "me"), TOKENS (file, one JWT per line),
-- FROM/COUNT (the slice of the token file this run uses: each request takes the next token
-- of the slice, thread by thread, so a join run joins each buyer once until the slice is spent).
local sale = os.getenv("SALE")
local mode = os.getenv("MODE") or "me"
local from = tonumber(os.getenv("FROM") or "0")
local count = tonumber(os.getenv("COUNT") or "0")
local tokens = {}
local n = 0
for line in io.lines(os.getenv("TOKENS")) do
  if n >= from and (count == 0 or n < from + count) then tokens[#tokens + 1] = line end
  n = n + 1
end
thread_id = 0
local next_id = 0
local threads = tonumber(os.getenv("THREADS") or "2")
function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end
local counter = 0
function request()
  -- Threads interleave over the slice: thread t takes t, t + threads, t + 2*threads, ...
  local i = (counter * threads + thread_id - 1) % #tokens + 1
  counter = counter + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[i] }
  if mode == "join" then
    return wrk.format("POST", "/api/sales/" .. sale .. "/line", headers)
  end
  return wrk.format("GET", "/api/sales/" .. sale .. "/line/me", headers)
end
