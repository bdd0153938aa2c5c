#!/usr/bin/env python3
"""A bad network link in user space, for the network-fault tests.

This machine's kernel has no sch_netem, so `tc netem` cannot add delay or
loss. This script opens two TUN devices (A and B, created here, without
packet-information headers) and carries every IP packet read from one into
the other: dropped with probability --loss, otherwise delivered after
--delay-ms plus a uniform jitter of +- --jitter-ms (so packets can reorder,
as with netem's jitter). The test moves A into a network namespace and gives
both ends addresses; the kernels on either side see a real link.

Prints "ready" once both devices exist. On SIGTERM prints one JSON line of
counters per direction ("a2b", "b2a": delivered, dropped) and exits.
"""

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="name of device A")
    p.add_argument("--b", required=True, help="name of device B")
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    rng = random.Random(args.seed)
    a, b = open_tun(args.a), open_tun(args.b)
    other = {a: b, b: a}
    key = {a: "a2b", b: "b2a"}
    stats = {k: {"delivered": 0, "dropped": 0} for k in ("a2b", "b2a")}
    queue = []  # (due, seq, fd to write to, packet, direction)
    seq = 0
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)

    while not stopping:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, pkt, k = heapq.heappop(queue)
            try:
                os.write(fd, pkt)
                stats[k]["delivered"] += 1
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 0.1
        try:
            ready, _, _ = select.select([a, b], [], [], min(timeout, 0.1))
        except InterruptedError:
            continue
        for fd in ready:
            try:
                pkt = os.read(fd, 65536)
            except OSError:
                continue
            k = key[fd]
            if rng.random() < args.loss:
                stats[k]["dropped"] += 1
                continue
            delay = args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)
            seq += 1
            heapq.heappush(
                queue, (time.monotonic() + max(0.0, delay) / 1000.0, seq, other[fd], pkt, k)
            )

    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
