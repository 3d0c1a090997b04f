"""Figures, ratios against their baselines, the printed table and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "latest.json"


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class Comparison:
    """One figure of ours against the same figure of a baseline measured in the same run."""

    name: str
    unit: str
    ours: float
    baseline: float
    baseline_is: str  # what the baseline is, in a few words
    lower_is_better: bool
    target: float | None = None  # the ratio ours/baseline to reach, if there is one

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target

    def row(self) -> list[str]:
        target = ""
        if self.target is not None:
            target = f"{'<=' if self.lower_is_better else '>='} {self.target:g}x"
            target += " met" if self.met else " MISSED"
        return [
            self.name,
            f"{self.ours:,.4g} {self.unit}",
            f"{self.baseline:,.4g} {self.unit}",
            f"{self.ratio:.2f}x",
            target,
            self.baseline_is,
        ]


@dataclass
class Benchmark:
    name: str
    comparisons: list[Comparison] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed under the table's rows
    seconds: float = 0.0
    error: str | None = None


def print_table(benchmarks: list[Benchmark]) -> None:
    header = ["figure", "ours", "baseline", "ratio", "target", "baseline is"]
    rows = [header]
    for benchmark in benchmarks:
        rows.append([f"[{benchmark.name}]", "", "", "", "", f"{benchmark.seconds:.0f} s"])
        if benchmark.error:
            rows.append(["  FAILED", benchmark.error[:200], "", "", "", ""])
        rows.extend(["  " + c.row()[0], *c.row()[1:]] for c in benchmark.comparisons)
        rows.extend([f"  - {note}"] for note in benchmark.notes)
    widths = [max(len(row[i]) for row in rows if len(row) > 1) for i in range(len(header) - 1)]
    for row in rows:
        if len(row) == 1:  # a note runs across the columns
            print(row[0])
            continue
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def write_results(benchmarks: list[Benchmark], path: Path = RESULTS) -> Path:
    document = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "benchmarks": {
            b.name: {
                "seconds": round(b.seconds, 1),
                "error": b.error,
                "comparisons": [
                    {**asdict(c), "ratio": round(c.ratio, 3), "target_met": c.met}
                    for c in b.comparisons
                ],
                "details": b.details,
                "notes": b.notes,
            }
            for b in benchmarks
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
