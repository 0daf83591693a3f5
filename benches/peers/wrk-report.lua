-- wrk script for benches/run-load: prints one JSON object after the run.
-- No response() callback: it would run Lua for every response and slow wrk down. wrk counts
-- statuses >= 400 itself (errors.status); bodies are not checked (fcgi-bench does that).

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"duration_secs":%.6f,"rps":%.2f,"bytes_received":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
