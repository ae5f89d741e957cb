"""Benchmark harness for the exporter (issue 4): `python -m benchmarks --help`.

Every moving part that is measured runs in its own process (fake API, exporter,
scrape clients, the limit server, the obvious implementation), so no two of
them share a GIL and the numbers reflect the exporter as it ships.
"""
