-- 4 public GETs, then 1 sensitive POST, repeated: exactly 80/20 of the requests sent; with a
-- second argument `sensitive`, every request is the sensitive POST (the sensitive-only run).
-- Counters are globals: done() reads them from each thread with thread:get().
local token, only_sensitive
n, done_n, public_ok, sensitive_ok, non2xx = 0, 0, 0, 0, 0
local public_req, sensitive_req
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  token = args[1]
  only_sensitive = args[2] == "sensitive"
  public_req = wrk.format("GET", "/public/hello")
  sensitive_req = wrk.format("POST", "/v1/accounts/A1/transfers", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, '{"amount":100,"currency":"EUR","payee":"bob"}')
end

function request()
  n = n + 1
  if only_sensitive or n % 5 == 0 then return sensitive_req end
  return public_req
end

function response(status, headers, body)
  done_n = done_n + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif body == "public\n" then
    public_ok = public_ok + 1
  elseif string.find(body, "transferred", 1, true) then
    sensitive_ok = sensitive_ok + 1
  end
end

function done(summary, latency, requests)
  local pub, sens, bad = 0, 0, 0
  for _, t in ipairs(threads) do
    pub = pub + t:get("public_ok")
    sens = sens + t:get("sensitive_ok")
    bad = bad + t:get("non2xx")
  end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d public_ok=%d sensitive_ok=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    pub, sens, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
