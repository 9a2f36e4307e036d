"""Run in a lab host: several verified pattern downloads at once, one JSON line with each one's outcome and times.

``python downloads.py --target 10.0.0.100:80 --target 10.0.0.101:80 --count 4 --bytes 2000000 --rate 400000
--timeout 30``: ``--count`` downloads per target, each a thread running ``nlb_sdn.lab.client.download`` (length and
byte pattern checked), with its wall-clock start and end so the caller can tell which were established when it
changed the load balancer.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from nlb_sdn.lab.client import download


def timed_download(host: str, port: int, size: int, rate: int, timeout: float, out: dict[str, Any]) -> None:
    """One download into ``out``, with its wall-clock start and end."""
    out["started"] = time.time()
    out["result"] = download(host, port, size, rate, timeout)
    out["ended"] = time.time()


def main(argv: list[str] | None = None) -> int:
    """Start every download, wait for all (each bounded by ``--timeout``), print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, help="literal IPv4 address:port (repeatable)")
    parser.add_argument("--count", type=int, default=1, help="downloads per target")
    parser.add_argument("--bytes", type=int, required=True, dest="size")
    parser.add_argument("--rate", type=int, required=True, help="bytes per second the backend sends")
    parser.add_argument("--timeout", type=float, required=True, help="bound on each download in seconds")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    threads = []
    for target in args.target:
        host, _sep, port = target.rpartition(":")
        for _ in range(args.count):
            out: dict[str, Any] = {"target": target}
            results.append(out)
            threads.append(
                threading.Thread(target=timed_download, args=(host, int(port), args.size, args.rate, args.timeout, out))
            )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.timeout + 5.0)
    print(json.dumps({"downloads": results}), flush=True)
    return 0 if all(r.get("result", {}).get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
