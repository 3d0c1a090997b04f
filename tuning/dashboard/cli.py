"""`tuning dashboard [--port N] [--open]`: serve the dashboard until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import threading
import webbrowser
from typing import Any

from tuning.cli.client import ClientError, Endpoints


def register(sub: Any) -> None:
    from tuning.cli import add_command

    parser = add_command(
        sub,
        "dashboard",
        run,
        "serve a web dashboard on 127.0.0.1 that shows your jobs live (it forwards to the API "
        "with your ID token; the functions stay private)",
    )
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--open", action="store_true", help="open it in the default browser")


def run(args: argparse.Namespace) -> int:
    from tuning.dashboard import assets, server

    endpoints = Endpoints.from_environment(args.config, caller=getattr(args, "caller", None))
    for name in ("submit", "status", "delete"):
        endpoints.url(name)  # every page needs the status URL; say now what is missing
    try:
        assets.served_file("uPlot.iife.min.js")
    except assets.AssetError as error:
        raise ClientError(str(error)) from None
    try:
        running = server.start(endpoints, port=args.port)
    except OSError as error:
        raise ClientError(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}") from None
    # The first line is the URL, for a person to open and for scripts to read.
    print(running.login_url, flush=True)
    print(
        "  (the link carries this run's token: share it with no one; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    if args.open:
        webbrowser.open(running.login_url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
    return 0
