"""A scraper in its own process: timed GETs over one keep-alive connection.

Each sample is the time from sending the request to having read the whole
(gzip) body, which is what a Prometheus scrape waits for before decoding.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import sys
import time
from pathlib import Path

HEADERS = {"Accept-Encoding": "gzip", "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str | None, bytes]:
    conn.request("GET", path, headers=HEADERS)
    response = conn.getresponse()
    body = response.read()
    return response.status, response.getheader("Content-Encoding"), body


def scrape(
    host: str,
    port: int,
    path: str,
    count: int,
    min_seconds: float,
    pause: float,
    max_seconds: float = float("inf"),
) -> tuple[list[float], bytes, str | None]:
    conn = http.client.HTTPConnection(host, port, timeout=120)
    status, encoding, body = _get(conn, path)  # warm-up: connection set-up is not a scrape
    if status != 200:
        raise SystemExit(f"GET {path}: HTTP {status}")
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < count or time.perf_counter() - started < min_seconds:
        if samples and time.perf_counter() - started >= max(max_seconds, min_seconds):
            break  # a slow server: fewer samples rather than an endless run
        begin = time.perf_counter()
        try:
            status, encoding, body = _get(conn, path)
        except (http.client.HTTPException, ConnectionError):
            # A dropped keep-alive connection is the server's fault: count the retry in.
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=120)
            status, encoding, body = _get(conn, path)
        samples.append(time.perf_counter() - begin)
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        if pause:
            time.sleep(pause)
    conn.close()
    return samples, body, encoding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scrape_client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--path", default="/metrics")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float("inf"),
        help="stop after this long even if fewer than --count scrapes were taken",
    )
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between scrapes")
    parser.add_argument("--save-body", type=Path, help="write the last (gzip) body here")
    args = parser.parse_args(argv)
    samples, body, encoding = scrape(
        args.host, args.port, args.path, args.count, args.min_seconds, args.pause, args.max_seconds
    )
    if encoding != "gzip":
        raise SystemExit(f"expected a gzip body, got Content-Encoding {encoding!r}")
    plain = gzip.decompress(body)
    if args.save_body:
        args.save_body.write_bytes(body)
    result = {
        "seconds": samples,
        "gzip_bytes": len(body),
        "plain_bytes": len(plain),
        "lines": plain.count(b"\n"),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
