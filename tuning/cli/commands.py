"""The job commands: submit, list, status, watch, events, logs, plot, download, cancel, pause,
resume, delete."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import requests

from tuning.cli import AT_REST, TERMINAL, add_command, client_from, print_json
from tuning.cli.client import ClientError
from tuning.cli.logs import LOCAL_EXECUTIONS_DIR, cloud_logs, local_log_file, tail
from tuning.cli.progress import open_progress
from tuning.cli.request_file import load_request, locate_refusal
from tuning.spec import GgufQuantization


def register(sub: Any) -> None:
    parser = add_command(sub, "submit", submit, "submit a job from a YAML or JSON request file")
    parser.add_argument("file", type=Path)
    parser.add_argument("--idempotency-key", help="retrying with the same key returns the same job")

    parser = add_command(
        sub,
        "estimate",
        estimate,
        "validate a request file's dataset and estimate its tokens, steps, GPU time and cost, "
        "creating nothing",
    )
    parser.add_argument("file", type=Path)

    parser = add_command(sub, "list", list_jobs, "list jobs, newest first")
    parser.add_argument(
        "--status",
        choices=sorted(
            TERMINAL | {"queued", "validating", "preparing", "training", "exporting", "paused"}
        ),
    )
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--page-token")

    for name, run, text in (
        ("status", status, "show one job"),
        ("events", events, "show a job's history"),
        ("cancel", cancel, "stop a job and keep its record"),
        ("pause", pause, "checkpoint a job and stop it, freeing its GPU, until it is resumed"),
        ("resume", resume, "queue a paused job again; it continues from its checkpoint"),
        ("delete", delete, "cancel a job and delete every file and record of it"),
    ):
        add_command(sub, name, run, text).add_argument("job_id")

    parser = add_command(sub, "watch", watch, "follow a job with a progress bar until it ends")
    parser.add_argument("job_id")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds"
    )

    parser = add_command(
        sub, "logs", logs, "show where a job's trainer logs are (locally: print them)"
    )
    parser.add_argument("job_id")
    parser.add_argument("-n", "--lines", type=int, default=100, help="how many of the last lines")

    parser = add_command(sub, "plot", plot, "write a PNG of the train and eval loss curves")
    parser.add_argument("job_id")
    parser.add_argument("-o", "--output", type=Path, default=Path("loss.png"))

    parser = add_command(sub, "checkpoints", checkpoints, "list a job's checkpoints, newest first")
    parser.add_argument("job_id")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--page-token")

    parser = add_command(
        sub, "download", download, "download a completed job's artifact, or a checkpoint"
    )
    parser.add_argument("job_id")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--artifact", choices=["gguf", "adapter", "merged"])
    group.add_argument(
        "--checkpoint", type=int, metavar="STEP", help="a checkpoint's weights or adapter"
    )
    parser.add_argument(
        "--quantization",
        choices=[q.value for q in GgufQuantization],
        help="which GGUF file (default: the first written); implies --artifact gguf",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("."))


def submit(args: argparse.Namespace) -> int:
    request = load_request(args.file)
    try:
        answer = client_from(args).submit(request, idempotency_key=args.idempotency_key)
    except ClientError as error:
        raise locate_refusal(args.file, error) from None
    if args.json:
        print_json(answer)
    else:
        print(answer["job_id"])
    return 0


def estimate(args: argparse.Namespace) -> int:
    request = load_request(args.file)
    try:
        answer = client_from(args).estimate(request)
    except ClientError as error:
        raise locate_refusal(args.file, error) from None
    if args.json:
        print_json(answer)
    else:
        print(describe_estimate(answer))
    return 0


def describe_estimate(answer: dict[str, Any]) -> str:
    validation = answer["validation"]
    lines = [f"rows and tokens (cut at {validation['token_limit']} tokens)"]
    for name in ("train", "eval"):
        split = validation.get(name)
        if not split:
            continue
        tokens = split.get("tokens")
        counted = (
            f"{tokens} tokens, {split.get('truncated_rows')} rows truncated, "
            f"longest {split.get('longest')}"
            if tokens is not None
            else "tokens not counted"
        )
        lines.append(f"  {name:<6} {split['rows']} rows, {counted}  ({split['source']})")
    if validation.get("tokens_note"):
        lines.append(f"  note   {validation['tokens_note']}")
    if validation.get("packed_rows") is not None:
        lines.append(f"  packed into {validation['packed_rows']} sequences")
    lines.append(
        f"steps    {validation.get('steps_per_epoch')} per epoch, "
        f"{validation.get('total_steps')} in total"
    )
    placement = answer["placement"]
    lines.append(
        f"tier     {placement['tier']} ({placement['gpu_count']} x {placement['gpu_type']})"
    )
    priced = answer.get("estimate") or {}
    for tier in priced.get("tiers", []):
        lines.append(f"  {tier['tier']:<16} {describe_cost(tier)}")
    if priced.get("note"):
        lines.append(f"  {priced['note']}")
    return "\n".join(lines)


def describe_cost(tier: dict[str, Any]) -> str:
    seconds = tier.get("estimated_seconds")
    cost = tier.get("estimated_cost_usd")
    if seconds is None:
        time = "time unknown"
    elif seconds < 60:
        time = "under a minute of training"
    else:
        time = f"~{seconds / 60:.0f} min of training"
    price = f", ~${cost:.2f}" if cost is not None and cost >= 0.01 else ""
    if cost is None:
        price = ", no price (the operator's gpu_pricing sets one)"
    return f"{time}{price}; start-up and export not included ({tier.get('throughput_source')})"


def list_jobs(args: argparse.Namespace) -> int:
    page = client_from(args).list_jobs(
        status=args.status, limit=args.limit, page_token=args.page_token
    )
    if args.json:
        print_json(page)
        return 0
    for job in page["jobs"]:
        print(f"{job['job_id']:<60} {job['status']:<10} {job.get('created_at', '')}")
    if page.get("next_page_token"):
        print(f"(more: --page-token {page['next_page_token']})")
    return 0


def status(args: argparse.Namespace) -> int:
    job = client_from(args).get_job(args.job_id)
    if args.json:
        print_json(job)
    else:
        print(describe(job))
    return 0


def describe(job: dict[str, Any]) -> str:
    lines = [f"{job['job_id']}  {job['status']}", f"  model    {job.get('base_model_id')}"]
    progress = job.get("progress") or {}
    if progress:
        lines.append(f"  progress step {progress.get('step')}/{progress.get('total_steps')}")
    for name, value in sorted((job.get("metrics") or {}).items()):
        if value is not None:
            lines.append(f"  {name:<16} {value}")
    for name, value in sorted((job.get("artifacts") or {}).items()):
        if value:
            lines.append(f"  {name:<16} {value}")
    validation = job.get("validation") or {}
    if validation.get("train"):
        train = validation["train"]
        tokens = f", {train['tokens']} tokens" if train.get("tokens") is not None else ""
        lines.append(f"  validated {train['rows']} training rows{tokens}")
    estimate = job.get("estimate") or {}
    if estimate.get("estimated_seconds") is not None:
        actual = estimate.get("actual_seconds")
        versus = f", actual {actual:.0f} s" if actual is not None else ""
        lines.append(
            f"  estimate {estimate['estimated_seconds']:.0f} s on {estimate['tier']}{versus}"
        )
    if job.get("error"):
        lines.append(f"  error    {job['error']}")
    return "\n".join(lines)


def events(args: argparse.Namespace) -> int:
    history = client_from(args).all_events(args.job_id)
    if args.json:
        print_json(history)
        return 0
    for event in history:
        payload = event.get("payload") or {}
        summary = json.dumps(payload)[:120]
        print(f"{event['timestamp']}  a{event['attempt']}  {event['type']:<11} {summary}")
    return 0


def watch(args: argparse.Namespace) -> int:
    client = client_from(args)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    job = client.get_job(args.job_id)  # an unknown job is a 404 before any bar is drawn
    display = open_progress(quiet=args.json)
    try:
        while True:
            display.show(job)
            if job["status"] in AT_REST:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"job {args.job_id} still {job['status']} after {args.timeout}s")
            time.sleep(args.interval)
            job = client.get_job(args.job_id)
    finally:
        display.close()
    if args.json:
        print_json(job)
    else:
        print(describe(job))
    return 0 if job["status"] == "completed" else 1


def loss_curves(history: list[dict[str, Any]]) -> tuple[dict[int, float], dict[int, float]]:
    """Train and eval loss by step; a later attempt's point replaces an earlier one."""
    train: dict[int, float] = {}
    evaluation: dict[int, float] = {}
    for event in sorted(history, key=lambda e: (e["attempt"], e["seq"])):
        payload = event.get("payload") or {}
        if event["type"] == "progress" and payload.get("loss") is not None:
            train[int(payload["step"])] = float(payload["loss"])
        metrics = payload.get("metrics") or {}
        if event["type"] == "evaluation" and metrics.get("eval_loss") is not None:
            evaluation[int(metrics.get("step") or 0)] = float(metrics["eval_loss"])
    return train, evaluation


def plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    train, evaluation = loss_curves(client_from(args).all_events(args.job_id))
    if not train and not evaluation:
        raise ClientError(f"job {args.job_id} has no loss points yet")
    figure, axes = plt.subplots(figsize=(7, 4))
    if train:
        axes.plot(sorted(train), [train[s] for s in sorted(train)], label="train loss")
    if evaluation:
        steps = sorted(evaluation)
        axes.plot(steps, [evaluation[s] for s in steps], marker="o", label="eval loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(args.job_id)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    plt.close(figure)
    print(args.output)
    return 0


def checkpoints(args: argparse.Namespace) -> int:
    page = client_from(args).checkpoints(args.job_id, limit=args.limit, page_token=args.page_token)
    if args.json:
        print_json(page)
        return 0
    print(f"{'step':>8} {'epoch':>6} {'train loss':>10} {'eval loss':>10} {'size':>9}  created")
    for checkpoint in page["checkpoints"]:
        print(describe_checkpoint(checkpoint))
    if page.get("next_page_token"):
        print(f"(more: --page-token {page['next_page_token']})")
    return 0


def describe_checkpoint(checkpoint: dict[str, Any]) -> str:
    def figure(value: float | None, width: int, digits: int = 4) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    size = checkpoint.get("size_bytes")
    megabytes = f"{size / 1e6:>7.1f}MB" if size is not None else f"{'-':>9}"
    eval_loss = (checkpoint.get("eval_metrics") or {}).get("eval_loss")
    return (
        f"{checkpoint['step']:>8} {figure(checkpoint.get('epoch'), 6, 2)} "
        f"{figure(checkpoint.get('train_loss'), 10)} {figure(eval_loss, 10)} {megabytes}  "
        f"{checkpoint.get('created_at') or ''}"
    )


def download(args: argparse.Namespace) -> int:
    quantization = getattr(args, "quantization", None)
    if quantization and args.artifact not in {None, "gguf"}:
        raise ClientError(f"--quantization picks a GGUF file, not a {args.artifact} artifact")
    answer = client_from(args).download_link(
        args.job_id,
        "gguf" if quantization else args.artifact,
        checkpoint=getattr(args, "checkpoint", None),
        quantization=quantization,
    )
    written = [str(path) for path in write_files(answer, args.output)]
    if args.json:
        print_json({**answer, "written": written})
    else:
        print("\n".join(written))
    return 0


def write_files(answer: dict[str, Any], output: Path) -> list[Path]:
    """Fetch every file of a download route's answer into `output`, by its relative path."""
    files = answer.get("files") or [{"download_url": answer["download_url"]}]
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in files:
        url = entry["download_url"]
        relative = entry.get("path") or Path(unquote(urlparse(url).path)).name
        if relative.startswith("/") or ".." in Path(relative).parts:
            raise ClientError(f"refusing to write {relative!r} outside {output}")
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fetch(url, target)
        written.append(target)
    return written


def fetch(url: str, target: Path) -> None:
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            with target.open("wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    handle.write(chunk)
    except requests.RequestException as error:
        raise ClientError(f"download of {target.name} failed: {error}") from error


def logs(args: argparse.Namespace) -> int:
    job = client_from(args).get_job(args.job_id)
    execution = job.get("execution")
    if not execution:
        raise ClientError(f"{args.job_id} has no trainer execution yet (status {job['status']})")
    cloud = cloud_logs(execution)
    if cloud is not None:
        print(f"Logs Explorer: {cloud.console_url}")
        print(f"In a terminal: {cloud.gcloud_command(args.lines)}")
        return 0
    local_dir = os.environ.get(LOCAL_EXECUTIONS_DIR)
    path = local_log_file(execution, Path(local_dir)) if local_dir else None
    if path is None or not path.is_file():
        raise ClientError(
            f"no log found for execution {execution}"
            + ("" if local_dir else f" (set {LOCAL_EXECUTIONS_DIR}: `source .local/stack.env`)")
        )
    print("\n".join(tail(path, args.lines)))
    return 0


def cancel(args: argparse.Namespace) -> int:
    answer = client_from(args).cancel(args.job_id)
    if args.json:
        print_json(answer)
    else:
        print(f"{args.job_id} {answer.get('status', 'cancelled')}")
    return 0


def pause(args: argparse.Namespace) -> int:
    answer = client_from(args).pause(args.job_id)
    if args.json:
        print_json(answer)
    else:
        print(f"{args.job_id} {_pause_state(answer)}")
        if answer.get("status_reason"):
            print(f"  {answer['status_reason']}")
    return 0


def _pause_state(job: dict[str, Any]) -> str:
    """`pausing` while the trainer saves its checkpoint, else the job's status."""
    status = str(job.get("status", "paused"))
    return "pausing" if status == "training" and job.get("pause_requested_at") else status


def resume(args: argparse.Namespace) -> int:
    answer = client_from(args).resume(args.job_id)
    if args.json:
        print_json(answer)
    else:
        print(f"{args.job_id} {answer.get('status', 'queued')}")
    return 0


def delete(args: argparse.Namespace) -> int:
    answer = client_from(args).delete(args.job_id)
    if args.json:
        print_json(answer)
    else:
        print(answer.get("message", "deleted"))
        for resource in answer.get("deleted_resources", []):
            print(f"  {resource}")
    return 0
