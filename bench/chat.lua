-- wrk script for bench/run.py: POST one OpenAI chat completion per request and
-- print one "BENCH_JSON {...}" line (request count, errors, latency percentiles
-- in microseconds). The body is the one /work/shared/peer-bench uses, so the
-- two benchmarks send the same request.
--
--   BENCH_MODEL=bench-model BENCH_STREAM=0 wrk -t1 -c16 -d5s -s bench/chat.lua \
--       -H 'Authorization: Bearer KEY' http://127.0.0.1:PORT/v1/chat/completions
--
-- BENCH_STREAM=1 sends "stream": true; wrk then times the whole stream.
-- errors.status counts responses with a status above 399.

local model = os.getenv("BENCH_MODEL") or "bench-model"
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
  '{"model":"%s","messages":[{"role":"system","content":"You are a benchmark."},' ..
  '{"role":"user","content":"Say hello in one short sentence."}],' ..
  '"max_tokens":32,"temperature":0%s}',
  model, stream and ',"stream":true' or '')

function done(summary, latency, requests)
  local e = summary.errors
  local function p(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, p(50), p(90), p(99)))
end

-- BENCH_DELAY_MS > 0: each connection waits that long before each request (the
-- 1x/10x run: the offered rate then grows with the number of connections).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  function delay() return delay_ms end
end
