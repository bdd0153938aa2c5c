#!/usr/bin/env python3
"""Reads one round of benches/load/run.sh output, or prints the final table.

  parse.py WORKDIR ROUND   -> one TSV line per tool:
                              tool round requests req_s p50_ms p95_ms p99_ms cpu_us_per_req rss_mib
  parse.py --table FILE    -> the median of each column over the rounds, and
                              the req/s ratio to wrk
"""
import json
import re
import statistics
import sys


def time_v(path):
    """User+system CPU seconds and peak RSS (MiB) from /usr/bin/time -v."""
    text = open(path).read()
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", text).group(1))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return user + system, rss_kib / 1024.0


def wrk(prefix):
    vals = {}
    for line in open(prefix):
        if line.startswith("VANTAGE_BENCH "):
            _, key, value = line.split()
            vals[key] = int(value)
    secs = vals["duration_us"] / 1e6
    return (vals["requests"], vals["requests"] / secs,
            vals["p50_us"] / 1000, vals["p95_us"] / 1000, vals["p99_us"] / 1000)


def oha(prefix):
    doc = json.load(open(prefix))
    summary = doc["summary"]
    pct = doc["latencyPercentiles"]
    requests = sum(doc.get("statusCodeDistribution", {}).values())
    return (requests, summary["requestsPerSec"],
            pct["p50"] * 1000, pct["p95"] * 1000, pct["p99"] * 1000)


def vantage(prefix):
    summary = None
    for line in open(prefix + ".json"):
        doc = json.loads(line)
        if doc.get("type") == "summary":
            summary = doc
    metrics = summary["metrics"]
    reqs = metrics["http_reqs"]
    dur = metrics["http_req_duration"]
    def pct(name):
        return dur.get(name, dur.get(name.replace("(", "").replace(")", "")))

    return (reqs["count"], reqs["rate"], dur["med"], pct("p(95)"), pct("p(99)"))


def row(workdir, rnd):
    for tool, parse in (("vantage-agent", vantage), ("wrk", wrk), ("oha", oha)):
        prefix = f"{workdir}/{tool.split('-')[0]}.{rnd}"
        requests, rps, p50, p95, p99 = parse(prefix)
        cpu, rss = time_v(prefix + ".time")
        cpu_us = cpu / requests * 1e6 if requests else float("nan")
        print(f"{tool}\t{rnd}\t{requests}\t{rps:.0f}\t{p50:.3f}\t{p95:.3f}\t{p99:.3f}\t{cpu_us:.2f}\t{rss:.1f}")


def table(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
    tools = []
    for r in rows:
        if r[0] not in tools:
            tools.append(r[0])
    med = {}
    for t in tools:
        cols = [[float(x) for x in r[2:]] for r in rows if r[0] == t]
        med[t] = [statistics.median(c) for c in zip(*cols)]
    wrk_rps = med.get("wrk", [0, 0])[1]
    print(f"{'tool':<14}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'peak RSS MiB':>14}{'vs wrk':>8}")
    for t in tools:
        _, rps, p50, p95, p99, cpu, rss = med[t]
        ratio = rps / wrk_rps if wrk_rps else float("nan")
        print(f"{t:<14}{rps:>10.0f}{p50:>9.3f}{p95:>9.3f}{p99:>9.3f}{cpu:>12.2f}{rss:>14.1f}{ratio:>7.2f}x")
    rounds = len([r for r in rows if r[0] == tools[0]])
    print(f"(median of {rounds} rounds; generator and nginx pinned to separate cores)")


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        table(sys.argv[2])
    else:
        row(sys.argv[1], sys.argv[2])
