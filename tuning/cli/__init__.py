"""`tuning`: submit, follow and manage fine-tuning jobs from a terminal.

    tuning submit job.yaml            # prints the job id
    tuning watch JOB_ID               # a progress bar until the job ends
    tuning plot JOB_ID -o loss.png    # train and eval loss curves
    tuning download JOB_ID -o out/    # the GGUF (or --artifact adapter|merged)

Endpoints come from TUNING_SUBMIT_URL / TUNING_STATUS_URL / TUNING_DELETE_URL
(`source .local/stack.env` after `make up`) or ~/.config/gemma-tuning/config.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuning.cli.client import ApiClient, ClientError, Endpoints

TERMINAL = {"completed", "failed", "cancelled"}
AT_REST = TERMINAL | {"paused"}  # where `tuning watch` stops


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except ClientError as error:
        if args.json:  # a script reads the error as it reads the answer
            print(json.dumps({"error": error.as_dict()}, sort_keys=True), file=sys.stderr)
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    from tuning.cli import chat, commands, data_commands, sample_commands
    from tuning.dashboard import cli as dashboard_cli

    parser = argparse.ArgumentParser(
        prog="tuning", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file with submit_url/status_url/delete_url"
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON (for scripts)")
    parser.add_argument(
        "--as",
        dest="caller",
        metavar="EMAIL",
        help="local stack only: the caller its issuer's tokens name (default $TUNING_CALLER, "
        "then $USER@localhost)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.register(sub)
    sample_commands.register(sub)
    chat.register(sub)
    data_commands.register(sub)
    dashboard_cli.register(sub)
    return parser


def client_from(args: argparse.Namespace) -> ApiClient:
    return ApiClient(Endpoints.from_environment(args.config, caller=getattr(args, "caller", None)))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def add_command(
    sub: Any, name: str, run: Callable[[argparse.Namespace], int | None], help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(run=run)
    return parser


if __name__ == "__main__":
    sys.exit(main())
