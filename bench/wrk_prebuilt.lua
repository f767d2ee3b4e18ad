-- wrk script: send pre-built requests (unique ids, valid signatures) in order, one thread.
-- Usage: wrk -t1 -c32 -d5s -s wrk_prebuilt.lua URL -- REQUESTS_FILE
-- REQUESTS_FILE holds whole HTTP requests separated by NUL bytes (see bench/wrk.py).
local prebuilt = {}
local count = 0
local sent = 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  local pos = 1
  while true do
    local stop = string.find(data, "\0", pos, true)
    if not stop then break end
    count = count + 1
    prebuilt[count] = string.sub(data, pos, stop - 1)
    pos = stop + 1
  end
end

function request()
  sent = sent + 1
  return prebuilt[(sent - 1) % count + 1]  -- wraps only if the file ran out (reported)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d,'
      .. ' "connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d,'
      .. ' "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
