-- Prints the latency percentiles the side-by-side table needs (wrk's own
-- --latency output has no p95), in microseconds, one per line.
done = function(summary, latency, requests)
  io.write(string.format("VANTAGE_BENCH requests %d\n", summary.requests))
  io.write(string.format("VANTAGE_BENCH errors %d\n",
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
  io.write(string.format("VANTAGE_BENCH duration_us %d\n", summary.duration))
  for _, p in ipairs({ 50, 95, 99 }) do
    io.write(string.format("VANTAGE_BENCH p%d_us %d\n", p, latency:percentile(p)))
  end
end
