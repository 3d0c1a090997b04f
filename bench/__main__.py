"""`make bench`: every benchmark, a table of ratios against baselines, bench/results/latest.json.

    python -m bench                      # all of them (6 to 10 minutes on 2 cores)
    python -m bench --only submit,cold   # some: submit, events, cold, trainer
    python -m bench --quick              # fewer repetitions, to check the harness
                                         # (written to bench/results/quick.json)

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

from bench.report import RESULTS, Benchmark, print_table, write_results

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
    out = args.out or (RESULTS.with_name("quick.json") if args.quick else RESULTS)
    path = write_results(benchmarks, out)
    print(f"\nwritten: {path}")
    return 1 if any(b.error for b in benchmarks) else 0


def run_benchmarks(chosen: list[str], workdir: Path, *, quick: bool) -> list[Benchmark]:
    from bench import cold_start, event_path, submit_path, trainer_throughput

    scale = 0.2 if quick else 1.0
    on_stack: dict[str, Callable[[Any], Benchmark]] = {
        "submit": lambda stack: submit_path.run(stack, requests=int(300 * scale)),
        "events": lambda stack: event_path.run(
            stack, submissions=int(40 * scale), jobs=40, events_per_job=max(2, int(10 * scale))
        ),
        "cold": lambda stack: cold_start.run(stack, rounds=2 if quick else 5),
    }
    results = []
    wanted = [name for name in chosen if name in on_stack]
    with _local_stack(workdir, needed=bool(wanted)) as stack:
        results += [_measure(name, lambda name=name: on_stack[name](stack)) for name in wanted]
    if "trainer" in chosen:  # after the stack is gone: the CPU is the trainer's alone
        rows = 80 if quick else trainer_throughput.ROWS
        rounds = 1 if quick else trainer_throughput.ROUNDS
        results.append(
            _measure("trainer", lambda: trainer_throughput.run(workdir / "trainer", rows, rounds))
        )
    return results


def _measure(name: str, benchmark: Callable[[], Benchmark]) -> Benchmark:
    print(f"running {name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = benchmark()
    except Exception as error:  # one broken benchmark must not hide the others
        traceback.print_exc()
        result = Benchmark(name, error=f"{type(error).__name__}: {error}")
    result.seconds = time.perf_counter() - started
    return result


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
