-- POST /enroll with a unique body per request: wrk would otherwise replay one body, which CourseFlow
-- answers from its idempotency key without queueing anything.
-- Arguments after `--`: <run tag> <comma-separated course ids> <comma-separated priority mix> [tokens file].
-- Requests go round-robin over the courses and each course cycles the mix, as backlog.priority() does.
-- With a tokens file (one student bearer token a line), each request is a student's own: the token names
-- the student, and the priority is the one the registrar granted.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  tag = args[1] or "run"
  courses = {}
  for id in string.gmatch(args[2] or "1", "%d+") do
    courses[#courses + 1] = tonumber(id)
  end
  mix = {}
  for p in string.gmatch(args[3] or "0", "%d+") do
    mix[#mix + 1] = tonumber(p)
  end
  tokens = {}
  if args[4] then
    for line in io.lines(args[4]) do
      tokens[#tokens + 1] = line
    end
  end
  sent = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  -- Unique per thread and request: one student asks once, so nothing is rejected as a duplicate.
  local student = tid * 100000000 + sent
  local course = courses[(sent % #courses) + 1]
  if #tokens > 0 then
    local token = tokens[((tid - 1) * 7919 + sent) % #tokens + 1]
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
    local body = string.format('{"course_id":%d,"idempotency_key":"%s-%d-%d"}', course, tag, tid, sent)
    return wrk.format(nil, "/enroll", headers, body)
  end
  local priority = mix[(math.floor(sent / #courses) % #mix) + 1]
  local body = string.format(
    '{"student_id":%d,"course_id":%d,"idempotency_key":"%s-%d-%d","priority":%d}',
    student, course, tag, tid, sent, priority)
  return wrk.format(nil, "/enroll", nil, body)
end

-- One machine-readable line for the benchmark; latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
