"""Decodes a base64 HdrHistogram V2+deflate blob with the reference Python reader
(PyPI package `hdrhistogram`) and prints the facts the Rust test compares."""
import json
import sys

from hdrh.histogram import HdrHistogram

blob = sys.stdin.read().strip()
h = HdrHistogram.decode(blob)
print(json.dumps({
    "total": h.get_total_count(),
    "min": h.get_min_value(),
    "max": h.get_max_value(),
    "p50": h.get_value_at_percentile(50.0),
    "p95": h.get_value_at_percentile(95.0),
    "p99": h.get_value_at_percentile(99.0),
}))
