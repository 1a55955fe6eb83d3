"""``make bench``: the figures against the simulators on loopback (1-8 from issue #7,
9 from "every prompt is a row", 10 from batch mode),
printed as one table (figure, what, target, measured, pass/fail).

    python -m bench                 # all of them
    python -m bench --only 1,2      # some of them
    python -m bench --quick         # shorter runs (smaller batches, 10 s of load)
    python -m bench --full          # figure 7 runs all 10,000 jobs, however long it takes
    python -m bench --strict        # exit status 1 when a target is missed (for CI)

Each figure runs in its own process, once per database/broker configuration,
with a fresh database; progress goes to stderr, the table to stdout, and each
run's raw numbers to ``var/bench/results.json``. A missed target prints FAIL
and the run goes on; the exit status is 1 when any figure failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any

from .common import BENCH_DIR, LOG_DIR, PYTHON, ROOT, machine_line, whatif_active


@dataclass(frozen=True)
class Figure:
    number: int
    module: str
    configs: tuple[str, ...]
    timeout: float  # seconds per configuration before the run is stopped


FIGURES = (
    Figure(1, "bench.b1_fanout", ("sqlite-orm", "pg-redis"), 120),
    Figure(2, "bench.b2_dispatch", ("sqlite-orm", "pg-redis"), 120),
    Figure(3, "bench.b3_poll", ("sqlite-orm", "pg-redis"), 240),
    Figure(4, "bench.b4_livelog", ("sqlite-orm",), 120),
    Figure(5, "bench.b5_pages", ("sqlite-orm",), 240),
    Figure(6, "bench.b6_live", ("sqlite-orm",), 180),
    Figure(7, "bench.b7_memory", ("sqlite-orm",), 540),
    Figure(8, "bench.b8_load", ("pg-redis",), 240),
    Figure(9, "bench.b9_items", ("sqlite-orm", "pg-redis"), 900),
    Figure(10, "bench.b10_batch", ("sqlite-orm", "pg-redis"), 900),
    Figure(11, "bench.b11_scores", ("sqlite-orm",), 600),
    Figure(12, "bench.b12_wide", ("sqlite-orm", "pg-redis"), 400),
    Figure(13, "bench.b13_rate_limits", ("sqlite-orm", "pg-redis"), 400),
    Figure(14, "bench.b14_two_clusters", ("pg-redis",), 600),
)


def parse_only(value: str) -> set[int]:
    try:
        chosen = {int(part) for part in value.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError("--only takes figure numbers, e.g. 1,2") from None
    unknown = chosen - {f.number for f in FIGURES}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"no such figure: {sorted(unknown) or value!r}")
    return chosen


def run_one(figure: Figure, config: str, quick: bool, full: bool) -> list[dict[str, Any]]:
    out = BENCH_DIR / f"result-{figure.number}-{config}.json"
    out.unlink(missing_ok=True)
    log = LOG_DIR / f"figure-{figure.number}-{config}.log"
    args = [PYTHON, "-m", figure.module, "--config", config, "--out", str(out)]
    if quick:
        args.append("--quick")
    env = {**os.environ}
    if full:
        env["BENCH_FULL"] = "1"
    timeout = figure.timeout * (4 if full and figure.number == 7 else 1)
    started = time.perf_counter()
    print(f"[{figure.number}] {figure.module} ({config}) ...", file=sys.stderr, flush=True)
    with open(log, "w") as output:
        # The child's progress lines go to the terminal and to its log.
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stderr_lines = _relay(process, output, timeout)
        finally:
            if process.poll() is None:
                _kill(process)
    seconds = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    if out.exists():
        rows = json.loads(out.read_text())
    if not rows:
        tail = " | ".join(stderr_lines[-3:]) or f"exit status {process.returncode}"
        rows = [
            {
                "figure": str(figure.number),
                "what": f"{figure.module} ({config})",
                "target": "",
                "measured": f"did not finish: {tail}"[:300],
                "ok": False,
                "note": f"See {log.relative_to(ROOT)}.",
            }
        ]
    for row in rows:
        row["figure"] = str(figure.number)
        row["seconds"] = seconds
        row["error"] = str(row["measured"]).startswith(("error:", "did not finish"))
    print(f"    done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return rows


def _relay(process: subprocess.Popen[str], log: Any, timeout: float) -> list[str]:
    """Copy the child's stderr to ours and to its log until it exits or times out."""
    import selectors

    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            lines.append(f"timed out after {timeout:.0f} s")
            _kill(process)
            break
        if selector.select(timeout=min(remaining, 1.0)):
            line = process.stderr.readline()
            if not line:
                break
            log.write(line)
            log.flush()
            lines.append(line.rstrip())
            if line.startswith("    "):
                sys.stderr.write(line)
                sys.stderr.flush()
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    return lines


def _kill(process: subprocess.Popen[str]) -> None:
    """Interrupt the child (its finally blocks stop its servers), then kill its group."""
    import signal

    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def table(rows: list[dict[str, Any]]) -> str:
    headers = ("fig", "what", "target", "measured", "result")
    widths = (3, 44, 28, 66, 6)
    lines = [
        " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    for row in rows:
        result = "PASS" if row["ok"] else "FAIL" if row["ok"] is False else "info"
        cells = [
            textwrap.wrap(str(value), width) or [""]
            for value, width in zip(
                (row["figure"], row["what"], row["target"], row["measured"], result),
                widths,
                strict=True,
            )
        ]
        for i in range(max(len(c) for c in cells)):
            lines.append(
                " | ".join(
                    (c[i] if i < len(c) else "").ljust(w)
                    for c, w in zip(cells, widths, strict=True)
                ).rstrip()
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--only", type=parse_only, help="figure numbers, e.g. 1,2")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument(
        "--full", action="store_true", help="figure 7: all 10,000 jobs, not time-boxed"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    args = parser.parse_args(argv)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for figure in FIGURES:
        if args.only and figure.number not in args.only:
            continue
        for config in figure.configs:
            rows.extend(run_one(figure, config, args.quick, args.full))
    total = time.perf_counter() - started
    machine = machine_line()
    load = (
        f"Load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} "
        "(timings assume an otherwise idle machine)"
    )
    (BENCH_DIR / "results.json").write_text(
        json.dumps(
            {"machine": machine, "load": load, "seconds": total, "rows": rows},
            indent=1,
            default=str,
        )
    )
    print()
    print(table(rows))
    notes = [row for row in rows if row.get("note")]
    if notes:
        print("\nNotes:")
        for row in notes:
            mark = "FAIL" if row["ok"] is False else "note"
            print(
                textwrap.fill(
                    f"[{row['figure']}] {mark}: {row['what']}: {row['note']}",
                    width=120,
                    subsequent_indent="    ",
                )
            )
    failed = sum(1 for row in rows if row["ok"] is False)
    mode = " (--quick)" if args.quick else ""
    print(f"\n{machine}\n{load}")
    for knob in whatif_active():
        print(f"WHAT-IF RUN, not the app as it is: {knob}")
    print(
        f"Total {total / 60:.1f} min{mode}; {len(rows) - failed} of {len(rows)} rows pass"
        + (f", {failed} FAIL" if failed else "")
        + f". Logs: {LOG_DIR.relative_to(ROOT)}/"
    )
    if any(row.get("error") for row in rows):
        return 2  # a figure could not be measured
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
