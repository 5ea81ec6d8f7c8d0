-- ./kw bench: one wrk script for every HTTP path it measures (bench/kwbench.py sets the environment).
--   BENCH_MODE    get (GET BENCH_PATH) | send (POST one record) | batch (POST {"messages": [BENCH_BATCH records]})
--   BENCH_PATH    e.g. /api/healthz, /api/send, /bench/seed/send, /api/send/batch
--   BENCH_KIND    the record's "bench" field;  BENCH_RECORD_BYTES  record size (200)
--   KRAFTWERK_API_KEY
-- Records are compact JSON of exactly BENCH_RECORD_BYTES bytes, the same shape as bench/aiokafka_flat.py's and the
-- kafka-producer-perf-test payloads: {"bench":"<kind>","seq":<n>,"pad":"<letters and digits>"}, no record key.
-- wrk has no time series, so response() counts the 2xx and other answers per wall-clock second in each thread and
-- done() prints them, merged, with wrk's own totals and latency percentiles as one line: BENCHJSON {...}.
local mode = os.getenv("BENCH_MODE") or "get"
local path = os.getenv("BENCH_PATH") or "/api/healthz"
local kind = os.getenv("BENCH_KIND") or mode
local size = tonumber(os.getenv("BENCH_RECORD_BYTES") or "200")
local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
local pad = string.rep("abcdefghijklmnopqrstuvwxyz0123456789", 40)

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local seq = 0
local function record()
  seq = seq + 1
  local n = tid * 100000000 + seq
  local head = '{"bench":"' .. kind .. '","seq":' .. n .. ',"pad":"'
  local start = n % 36
  return head .. string.sub(pad, start + 1, start + size - #head - 2) .. '"}'
end

function init(args)
  ok, bad, codes = {}, {}, {}
  wrk.headers["X-API-Key"] = os.getenv("KRAFTWERK_API_KEY") or ""
  if mode ~= "get" then
    wrk.headers["Content-Type"] = "application/json"
  end
end

function request()
  if mode == "get" then
    return wrk.format("GET", path)
  elseif mode == "send" then
    return wrk.format("POST", path, nil, record())
  end
  local parts = {}
  for i = 1, batch do
    parts[i] = '{"value":' .. record() .. '}'
  end
  return wrk.format("POST", path, nil, '{"messages":[' .. table.concat(parts, ",") .. ']}')
end

function response(status, headers, body)
  local t = os.time()
  if status >= 200 and status < 300 then
    ok[t] = (ok[t] or 0) + 1
  else
    bad[t] = (bad[t] or 0) + 1
    codes[status] = (codes[status] or 0) + 1
  end
end

local function merge(into, from)
  for k, v in pairs(from) do
    into[k] = (into[k] or 0) + v
  end
end

local function obj(t)
  local out = {}
  for k, v in pairs(t) do
    table.insert(out, '"' .. tostring(k) .. '":' .. tostring(v))
  end
  return "{" .. table.concat(out, ",") .. "}"
end

function done(summary, latency, requests)
  local all_ok, all_bad, all_codes = {}, {}, {}
  for _, thread in ipairs(threads) do
    merge(all_ok, thread:get("ok"))
    merge(all_bad, thread:get("bad"))
    merge(all_codes, thread:get("codes"))
  end
  local e = summary.errors
  io.write("BENCHJSON {",
    '"requests":', summary.requests, ',"duration_us":', summary.duration, ',"bytes":', summary.bytes,
    ',"errors":{"connect":', e.connect, ',"read":', e.read, ',"write":', e.write, ',"status":', e.status,
    ',"timeout":', e.timeout, '}',
    ',"latency_us":{"mean":', latency.mean, ',"max":', latency.max, ',"p50":', latency:percentile(50),
    ',"p90":', latency:percentile(90), ',"p99":', latency:percentile(99), ',"p999":', latency:percentile(99.9), '}',
    ',"ok_per_epoch_second":', obj(all_ok), ',"bad_per_epoch_second":', obj(all_bad),
    ',"bad_status_codes":', obj(all_codes), "}\n")
end
