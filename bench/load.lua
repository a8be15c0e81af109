-- wrk script: each request as a different user, with that user's token and task id.
-- BENCH_FILE holds one "token task_id" pair per line; BENCH_MODE picks the endpoint
-- (list, get, toggle, create, or create-key: a create with an Idempotency-Key).
local pairs_ = {}
local index = 0
local sent = 0
local mode = os.getenv("BENCH_MODE")
-- Idempotency keys unique across wrk's threads and runs: the run's start and the thread.
local started = tostring(os.time())
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_FILE")) do
    local token, id = line:match("(%S+) (%S+)")
    table.insert(pairs_, {token, id})
  end
  index = math.random(#pairs_)
end

function request()
  index = index % #pairs_ + 1
  local token, id = pairs_[index][1], pairs_[index][2]
  local headers = {["Authorization"] = "Bearer " .. token}
  if mode == "list" then
    return wrk.format("GET", "/api/tasks?limit=20", headers)
  elseif mode == "get" then
    return wrk.format("GET", "/api/tasks/" .. id, headers)
  elseif mode == "toggle" then
    return wrk.format("PATCH", "/api/tasks/" .. id .. "/complete", headers)
  end
  headers["Content-Type"] = "application/json"
  if mode == "create-key" then
    -- A create a client may retry: a new key per request, as each is a new task.
    sent = sent + 1
    headers["Idempotency-Key"] = started .. "-" .. thread_id .. "-" .. sent
  end
  return wrk.format("POST", "/api/tasks", headers, '{"title":"benchmark task"}')
end
