"""`python -m benchmarks`: the exporter as it ships vs the obvious implementation vs the limit.

For each size N it generates a payload, serves it from a fake API process, runs
the `webex-campaign-exporter` console script against it and measures poll
processing (from the exporter's `poll_completed` log lines), scrape latency from
a separate client process (idle and while polls run back to back), and RSS
(summed over the exporter's processes, should it run its poller in a child).
Then the same gzip body from a plain threaded server (the limit) and the obvious
prometheus_client implementation on the same payload. Finally, RSS after many
polls of a churning tenant. Timings are reported, never asserted: the exit code
is 0 unless the harness itself breaks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.payload import generate, serialise

DEFAULT_OUTPUT = procs.ROOT / "benchmarks" / "results" / "latest.json"

# (key in a size's result, table header, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("groups", "groups", "{:,}"),
    ("payload_mb", "payload MB", "{:.1f}"),
    ("processing_s", "exporter processing s", "{:.3f}"),
    ("us_per_group", "µs/group", "{:.1f}"),
    ("obvious_s", "obvious s", "{:.3f}"),
    ("speedup", "speedup", "{:.1f}x"),
    ("idle_p50_ms", "scrape p50 idle ms", "{:.2f}"),
    ("idle_p99_ms", "scrape p99 idle ms", "{:.2f}"),
    ("busy_p50_ms", "scrape p50 polling ms", "{:.2f}"),
    ("busy_p99_ms", "scrape p99 polling ms", "{:.2f}"),
    ("limit_p50_ms", "limit p50 ms", "{:.2f}"),
    ("limit_p99_ms", "limit p99 ms", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("steady_rss_mb", "steady RSS MB", "{:.0f}"),
)
CHURN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("groups", "groups", "{:,}"),
    ("rss_first_mb", "RSS after first polls MB", "{:.1f}"),
    ("rss_last_mb", "RSS after last polls MB", "{:.1f}"),
    ("ratio", "ratio", "{:.3f}"),
)


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    warmup_polls: int
    scrapes: int
    scrape_pause: float
    busy_min_polls: int
    obvious_repeats: int
    churn_groups: int
    churn_polls: tuple[int, int]
    quick: bool


def make_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    sizes = (
        tuple(args.sizes) if args.sizes else ((200, 2_000) if quick else (1_000, 10_000, 100_000))
    )
    churn_polls = tuple(args.churn_polls) if args.churn_polls else (50, 500)
    if len(churn_polls) != 2 or not 0 < churn_polls[0] < churn_polls[1]:
        raise SystemExit("--churn-polls takes two increasing counts, e.g. 50 500")
    return Plan(
        sizes=sizes,
        warmup_polls=3 if quick else 5,
        scrapes=args.scrapes or (60 if quick else 300),
        scrape_pause=0.002 if quick else 0.005,
        busy_min_polls=2 if quick else 3,
        obvious_repeats=2 if quick else 3,
        churn_groups=args.churn_groups or (200 if quick else 10_000),
        churn_polls=(churn_polls[0], churn_polls[1]),
        quick=quick,
    )


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency(result: dict[str, Any]) -> dict[str, float]:
    seconds = result["seconds"]
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
        "count": len(seconds),
        "gzip_bytes": result["gzip_bytes"],
        "plain_bytes": result["plain_bytes"],
    }


def scrape(
    port: int, count: int, pause: float, min_seconds: float = 0.0, save: Path | None = None
) -> dict[str, Any]:
    args = ["--port", str(port), "--count", str(count), "--pause", str(pause)]
    args += ["--min-seconds", f"{min_seconds:.3f}"]
    if save is not None:
        args += ["--save-body", str(save)]
    return procs.run_json("benchmarks.scrape_client", *args, timeout=900)


def _median(events: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(event[key]) for event in events)


def _poll_timeout(groups: int, polls: int) -> float:
    # Generous: a slow exporter must be measured, not cut off.
    return 60 + polls * (5 + groups / 2_000)


def bench_size(groups: int, plan: Plan, work: Path) -> dict[str, Any]:
    payload = work / f"payload-{groups}.json"
    payload.write_bytes(serialise(generate(groups)))
    body_file = work / f"metrics-{groups}.gz"
    result: dict[str, Any] = {"groups": groups, "payload_mb": payload.stat().st_size / 1e6}
    with (
        procs.FakeApi(payload) as api,
        procs.Exporter(api, 0.001, work / f"exporter-{groups}.log") as exporter,
    ):
        progress(f"{groups:,} groups: {plan.warmup_polls} polls, no scrapes")
        warm = exporter.wait_polls(plan.warmup_polls, _poll_timeout(groups, plan.warmup_polls))
        measured = warm[1:] or warm
        processing = _median(measured, "processing_s")
        duration = _median(measured, "duration_s")
        result["exporter"] = {
            "processing_s_median": processing,
            "processing_s_samples": [event["processing_s"] for event in measured],
            "fetch_s_median": _median(measured, "fetch_s"),
            "duration_s_median": duration,
            "groups_reported": measured[-1]["groups"],
        }
        progress(f"{groups:,} groups: scrapes while polls run back to back")
        before = len(exporter.polls)
        busy = scrape(
            exporter.port, plan.scrapes, plan.scrape_pause, plan.busy_min_polls * duration
        )
        during = exporter.polls[before:]
        result["exporter"]["polls_during_busy_scrapes"] = len(during)
        if during:
            result["exporter"]["processing_s_median_under_scrapes"] = _median(
                during, "processing_s"
            )
        api.hold_next()
        api.wait_held(_poll_timeout(groups, 1), exporter)
        time.sleep(0.5)
        steady = exporter.memory()
        progress(f"{groups:,} groups: idle scrapes (the next poll is held by the fake API)")
        idle = scrape(exporter.port, plan.scrapes, plan.scrape_pause, save=body_file)
        after = exporter.memory()
        api.release()
    result["scrape_busy"] = latency(busy)
    result["scrape_idle"] = latency(idle)
    result["rss"] = {
        "steady_mb": steady["rss_mb"],
        "peak_mb": after["peak_mb"],
        "peak_hwm_sum_mb": after["hwm_sum_mb"],
        "processes": after["processes"],
        "after_idle_scrapes_mb": after["rss_mb"],
    }
    progress(f"{groups:,} groups: limit server with the same gzip body")
    with procs.Server("limit", "--body", str(body_file)) as limit:
        result["limit"] = latency(scrape(limit.port, plan.scrapes, plan.scrape_pause))
    progress(f"{groups:,} groups: obvious prometheus_client implementation")
    obvious = procs.run_json(
        "benchmarks.obvious",
        "--payload",
        str(payload),
        "--repeats",
        str(plan.obvious_repeats),
        timeout=120 + plan.obvious_repeats * groups / 500,
    )
    result["obvious"] = {
        "seconds_median": statistics.median(obvious["seconds"]),
        "seconds_samples": obvious["seconds"],
        "exposition_bytes": obvious["exposition_bytes"],
    }
    payload.unlink()
    return result


def bench_churn(plan: Plan, work: Path) -> dict[str, Any]:
    first, last = plan.churn_polls
    groups = plan.churn_groups
    payload = work / f"payload-churn-{groups}.json"
    payload.write_bytes(serialise(generate(groups, seed=5)))
    progress(f"churn: {groups:,} groups, 1% replaced before every poll")
    readings: list[dict[str, float]] = []
    with (
        procs.FakeApi(payload, churn_every=1, hold_at=(first + 1, last + 1)) as api,
        procs.Exporter(api, 0.001, work / "exporter-churn.log") as exporter,
    ):
        for polls in (first, last):
            api.wait_held(_poll_timeout(groups, polls), exporter)
            exporter.wait_polls(polls, 30)
            time.sleep(0.5)
            readings.append(exporter.memory())
            progress(f"churn: {polls} polls, RSS {readings[-1]['rss_mb']:.1f} MB")
            api.release()
            time.sleep(0.1)
    payload.unlink()
    return {
        "groups": groups,
        "polls_first": first,
        "polls_last": last,
        "rss_first_mb": readings[0]["rss_mb"],
        "rss_last_mb": readings[1]["rss_mb"],
        "peak_rss_mb": readings[1]["peak_mb"],
        "processes": readings[1]["processes"],
        "ratio": readings[1]["rss_mb"] / readings[0]["rss_mb"],
    }


def flatten(size: dict[str, Any]) -> dict[str, float]:
    exporter, obvious = size["exporter"], size["obvious"]
    processing = exporter["processing_s_median"]
    return {
        "groups": size["groups"],
        "payload_mb": size["payload_mb"],
        "processing_s": processing,
        "us_per_group": processing / size["groups"] * 1e6,
        "obvious_s": obvious["seconds_median"],
        "speedup": obvious["seconds_median"] / processing if processing > 0 else math.inf,
        "idle_p50_ms": size["scrape_idle"]["p50_ms"],
        "idle_p99_ms": size["scrape_idle"]["p99_ms"],
        "busy_p50_ms": size["scrape_busy"]["p50_ms"],
        "busy_p99_ms": size["scrape_busy"]["p99_ms"],
        "limit_p50_ms": size["limit"]["p50_ms"],
        "limit_p99_ms": size["limit"]["p99_ms"],
        "peak_rss_mb": size["rss"]["peak_mb"],
        "steady_rss_mb": size["rss"]["steady_mb"],
    }


def evaluate(rows: list[dict[str, float]], churn: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, PASS/FAIL (or SKIP when the size was not run)."""
    by_size = {int(row["groups"]): row for row in rows}
    targets: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        targets.append({"target": name, "status": status, "detail": detail})

    for n in (10_000, 100_000):
        row = by_size.get(n)
        if row is None:
            add(f"scrape p99 under polls at {n:,}", None, "size not run")
            add(f">= 5x faster than obvious at {n:,}", None, "size not run")
            continue
        bound = max(2 * row["limit_p99_ms"], 10.0)
        add(
            f"scrape p99 under polls at {n:,}",
            row["busy_p99_ms"] <= bound,
            f"{row['busy_p99_ms']:.2f} ms <= max(2 x {row['limit_p99_ms']:.2f}, 10)"
            f" = {bound:.2f} ms",
        )
        add(
            f">= 5x faster than obvious at {n:,}",
            row["speedup"] >= 5,
            f"{row['obvious_s']:.3f} s / {row['processing_s']:.3f} s = {row['speedup']:.1f}x",
        )
    row = by_size.get(100_000)
    if row is None:
        add("processing at 100,000 <= 1.5 s", None, "size not run")
        add("peak RSS at 100,000 <= 400 MB", None, "size not run")
    else:
        add(
            "processing at 100,000 <= 1.5 s",
            row["processing_s"] <= 1.5,
            f"{row['processing_s']:.3f} s",
        )
        add(
            "peak RSS at 100,000 <= 400 MB",
            row["peak_rss_mb"] <= 400,
            f"{row['peak_rss_mb']:.0f} MB",
        )
    ratio = churn["ratio"]
    add(
        f"RSS after {churn['polls_last']} vs {churn['polls_first']} polls within 5%",
        abs(ratio - 1) <= 0.05,
        f"{churn['rss_last_mb']:.1f} / {churn['rss_first_mb']:.1f} MB = {ratio:.3f}"
        f" ({churn['groups']:,} groups churning)",
    )
    return targets


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    version, source = procs.measured_exporter()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "exporter_version": version,
        "exporter_path": str(source),
        "commit": _git_state(source),
    }


def _git_state(source: Path) -> str | None:
    """The commit the measured exporter came from, `+dirty` when its files differ from it."""

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=source, check=False
        )
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--", ".") else "")


def _table(columns: tuple[tuple[str, str, str], ...], rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB;"
        f" Python {machine['python']}; {machine['platform']}",
        f"Exporter {machine['exporter_version']} (commit {machine['commit']});"
        f" command: {report['command']}",
        *([f"Label: {report['label']}"] if report["label"] else []),
        "",
        _table(COLUMNS, report["rows"]),
        "",
        _table(CHURN_COLUMNS, [report["churn"]]),
        f"(churn: RSS after {report['churn']['polls_first']} vs {report['churn']['polls_last']}"
        " polls, 1% of the groups replaced before every poll)",
        "",
        "Targets (issue 4, informative):",
    ]
    width = max(len(t["target"]) for t in report["targets"])
    for target in report["targets"]:
        lines.append(f"  {target['status']:<4}  {target['target']:<{width}}  {target['detail']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the exporter as it ships (issue 4). Informative only: exit code 0"
        " unless the harness itself breaks.",
    )
    parser.add_argument("--label", help="a note on what is measured, kept in the output")
    parser.add_argument("--quick", action="store_true", help="small sizes, few samples (< 1 min)")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="group counts to run")
    parser.add_argument("--scrapes", type=int, help="scrapes per latency measurement")
    parser.add_argument("--churn-groups", type=int, help="groups in the RSS-under-churn run")
    parser.add_argument(
        "--churn-polls",
        type=int,
        nargs=2,
        metavar=("FIRST", "LAST"),
        help="RSS after FIRST vs LAST polls (default 50 500)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON results (default {DEFAULT_OUTPUT.relative_to(procs.ROOT)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    machine = machine_info()  # before the run: the checkout may change while it runs
    try:
        with tempfile.TemporaryDirectory(prefix="webex-bench-") as tmp:
            work = Path(tmp)
            sizes = [bench_size(groups, plan, work) for groups in plan.sizes]
            churn = bench_churn(plan, work)
    except (procs.HarnessError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    rows = [flatten(size) for size in sizes]
    report: dict[str, Any] = {
        "machine": machine,
        "command": command.strip(),
        "label": args.label,
        "plan": asdict(plan),
        "elapsed_s": round(time.monotonic() - started, 1),
        "columns": [{"key": k, "title": t} for k, t, _ in COLUMNS],
        "rows": rows,
        "churn": churn,
        "sizes": sizes,
    }
    report["targets"] = evaluate(rows, churn)
    text = render_report(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report["table"] = text
    args.output.write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(text)
    progress(f"done in {report['elapsed_s']} s; JSON in {args.output}")
    return 0
