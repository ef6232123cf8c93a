-- Counts which shard answered each response ("Hello from PID <pid> (shard <i>" in the body),
-- across wrk's threads, and prints one "SHARE <key> <count>" line per shard.
counts = {} -- global: wrk reads it from each thread with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local key = body:match("PID (%d+ %(shard %d+)") or body:match("PID (%d+)") or "?"
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("counts")) do
      total[key] = (total[key] or 0) + count
    end
  end
  for key, count in pairs(total) do
    io.write(string.format("SHARE %s %d\n", key, count))
  end
end
