"""`make bench`: every benchmark in turn, each printing its own figures and the machine.

    .venv/bin/python bench/run_all.py [--quick] [--only calendar,ingest,floor,latency,scale] [--pg]

Full sizes by default (the issue's figures: 5,000 messages, 200 acknowledgements, a million
cases); --quick runs small sizes to check that everything works, not for figures. --pg adds the
PostgreSQL variant where a benchmark has one only on request (scale; ingest always runs both).
The ingest, floor and latency benchmarks need ../shared/bench (or $BENCH_SHARED) and say so if it is
missing. Not part of `make test`. Record figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

HERE = Path(__file__).resolve().parent
ORDER = ("calendar", "ingest", "floor", "latency", "scale")


def commands(quick: bool, pg: bool) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "calendar": [py, str(HERE / "calendar_bench.py"), *(["20000"] if quick else [])],
        "ingest": [py, str(HERE / "ingest_bench.py"), *(["--count", "300"] if quick else [])],
        "floor": [py, str(HERE / "floor_bench.py"), *(["--count", "300"] if quick else [])],
        "latency": [py, str(HERE / "latency_bench.py"), *(["--count", "30"] if quick else [])],
        "scale": [py, str(HERE / "scale_bench.py"),
                  *(["--cases", "20000", "--due", "1000"] if quick else []), *(["--pg"] if pg else [])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated subset, in order")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL variants too (scale)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
    benchlib.stop_cleanly_on_sigterm()
    print("== complaints-worker benchmarks" + (" (--quick: sizes too small for figures)" if args.quick
                                                else "") + " ==")
    for line in benchlib.machine_lines():
        print(line)
    outcomes: list[str] = []
    for name in (n for n in ORDER if n in chosen):
        print(f"\n{'=' * 20} {name} {'=' * 20}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(commands(args.quick, args.pg)[name], cwd=benchlib.ROOT).returncode
        outcomes.append(f"{name} {'ok' if code == 0 else f'FAILED ({code})'} "
                        f"in {time.perf_counter() - started:.0f} s")
    print("\n" + "; ".join(outcomes))
    return 0 if all(o.split()[1] == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
