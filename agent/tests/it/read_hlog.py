"""Reads an HdrHistogram interval log with the reference Python reader and
prints `TOTAL_COUNT INTERVALS MAX_US` (used by tests/it/load.rs)."""
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3600000000, 3))
total = intervals = top = 0
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    total += h.get_total_count()
    top = max(top, h.get_max_value())
    intervals += 1
print(total, intervals, top)
