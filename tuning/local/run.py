"""`make run`: the product end to end on one machine, through its public surfaces.

Brings the local stack up, submits the demo job with the CLI, follows it with a
progress bar, prints its metrics, artifacts and a download URL, writes the
loss curve to `.local/demo-loss.png`, shows the base and the trained model's
answers to three eval questions with the exact-match score, and brings the
stack down again. Exits non-zero unless the job completed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tuning.cli.sample_commands import describe_samples
from tuning.local import stack
from tuning.local.demo import SAMPLES, demo_request


def cli(*args: str, environ: dict[str, str], capture: bool = False) -> str:
    """Run the `tuning` CLI as a user would, against the local stack."""
    command = [str(Path(sys.executable).with_name("tuning")), *args]
    result = subprocess.run(
        command, env=environ, check=False, text=True, stdout=subprocess.PIPE if capture else None
    )
    if result.returncode != 0 and args[0] != "watch":
        raise SystemExit(f"`tuning {' '.join(args)}` failed with exit code {result.returncode}")
    return result.stdout or ""


def run_demo(workdir: Path, keep_up: bool = False) -> int:
    exports = stack.up(workdir)
    environ = {**os.environ, **exports}
    try:
        request_file = workdir / "demo-request.json"
        request = demo_request(exports["TUNING_DEMO_MODEL"], exports["TUNING_DEMO_DATASET"])
        request_file.write_text(json.dumps(request, indent=2))
        job_id = cli("submit", str(request_file), environ=environ, capture=True).strip()
        print(f"submitted {job_id}; following it (Ctrl-C stops watching, the job goes on)")
        cli("watch", job_id, "--interval", "1", "--timeout", "1200", environ=environ)
        job = json.loads(cli("--json", "status", job_id, environ=environ, capture=True))
        if job["status"] != "completed":
            print(f"the demo job ended {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        # Full fine-tuning exports the whole model as its adapter artifact; LoRA a merged one.
        artifact = "merged" if job["artifacts"].get("merged_path") else "adapter"
        link = json.loads(
            cli("--json", "download", job_id, "--artifact", artifact, "-o",
                str(workdir / "demo-model"), environ=environ, capture=True)
        )  # fmt: skip
        plot = workdir / "demo-loss.png"
        cli("plot", job_id, "-o", str(plot), environ=environ, capture=True)
        print(f"\nmetrics:   {json.dumps(job.get('metrics'), indent=None)}")
        print(f"artifacts: {json.dumps(job.get('artifacts'), indent=None)}")
        print(f"download:  {link.get('download_url') or link['files'][0]['download_url']}")
        print(f"files:     {', '.join(link['written'])}")
        print(f"loss plot: {plot}")
        # What it learned: the base and the trained model answer the first eval questions.
        answers = json.loads(cli("--json", "samples", job_id, environ=environ, capture=True))
        shown = {**answers, "samples": answers["samples"][:SAMPLES]}  # the rest: scored rows
        total = len(answers["samples"])
        print(f"\nwhat it learned: {SAMPLES} of its {total} eval answers (`tuning samples JOB`")
        print("shows all; on a stack of `make up`, `tuning chat JOB` asks your own)\n")
        print(describe_samples(shown, width=100))
        return 0
    finally:
        if not keep_up:
            stack.down(workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".local"))
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    return run_demo(args.workdir.resolve(), keep_up=args.keep_up)


if __name__ == "__main__":
    sys.exit(main())
