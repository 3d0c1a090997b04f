"""`make bench`: every benchmark, a table of ratios against baselines, bench/results/latest.json.

    python -m bench                      # all of them (about 10 minutes on 2 cores)
    python -m bench --only submit,cold   # some: submit, events, cold, trainer
    python -m bench --quick              # fewer repetitions, to check the harness

Speed figures are only ever compared with a baseline measured in the same run: the
machines are shared, so absolute times say little and the ratios are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.report import Benchmark, print_table, write_results

NAMES = ("submit", "events", "cold", "trainer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated: {NAMES}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s): {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        benchmarks = run_benchmarks(chosen, Path(folder), quick=args.quick)
    print()
    print_table(benchmarks)
    path = write_results(benchmarks, *([args.out] if args.out else []))
    print(f"\nwritten: {path}")
    return 1 if any(b.error for b in benchmarks) else 0


def run_benchmarks(chosen: list[str], workdir: Path, *, quick: bool) -> list[Benchmark]:
    from bench import cold_start, event_path, submit_path, trainer_throughput

    scale = 0.2 if quick else 1.0
    plans: dict[str, Callable[..., Benchmark]] = {
        "submit": lambda stack: submit_path.run(stack, requests=int(300 * scale)),
        "events": lambda stack: event_path.run(
            stack, submissions=int(40 * scale), jobs=40, events_per_job=max(2, int(10 * scale))
        ),
        "cold": lambda stack: cold_start.run(stack, rounds=2 if quick else 5),
        "trainer": lambda _: trainer_throughput.run(
            workdir / "trainer", rows=80 if quick else trainer_throughput.ROWS
        ),
    }
    results = []
    needs_stack = [name for name in chosen if name != "trainer"]
    with _local_stack(workdir, needed=bool(needs_stack)) as stack:
        for name in chosen:
            print(f"running {name} ...", flush=True)
            started = time.perf_counter()
            try:
                benchmark = plans[name](stack)
            except Exception as error:  # one broken benchmark must not hide the others
                traceback.print_exc()
                benchmark = Benchmark(name, error=f"{type(error).__name__}: {error}")
            benchmark.seconds = time.perf_counter() - started
            results.append(benchmark)
    return results


@contextlib.contextmanager
def _local_stack(workdir: Path, *, needed: bool) -> Iterator[Any]:
    """Emulators and a stack of every function (dispatch with the recording launcher)."""
    if not needed:
        yield None
        return
    from bench.stack import Stack
    from tuning.local.emulators import EmulatorStack
    from tuning.local.stack import pointed_at

    emulators = EmulatorStack(workdir / "emulators")
    try:
        with pointed_at(emulators.start().environ()):
            stack = Stack.start(workdir / "stack")
            try:
                yield stack
            finally:
                stack.stop()
    finally:
        emulators.stop()


if __name__ == "__main__":
    sys.exit(main())
