"""One Cloud Function served locally: functions-framework's app under gunicorn, tuned for a
machine the trainers share.

    python -m tuning.local.function_server --target serve_job_status \\
        --source functions/status/main.py --signature-type http --host 127.0.0.1 --port 8101

`python -m functions_framework` serves with gunicorn's defaults, which its command line cannot
change: connections kept alive for 2 s. A client that polls every 2 s on one kept-alive
connection (`tuning watch`'s default interval, a requests.Session, the Pub/Sub emulator's
pushes) then sends its next request just as gunicorn closes the idle connection, and gets
`RemoteDisconnected` instead of an answer; the busier the machine (a trainer's GGUF export
keeps every core busy), the more often the two coincide. Cloud Run's front end keeps
connections to an instance open far longer, so here they are kept for
KEEPALIVE_SECONDS, longer than any of our clients waits between requests, and a client
idle for longer finds the connection closed before it sends (urllib3 checks) instead of
racing the close.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

KEEPALIVE_SECONDS = 75  # more than any poll interval of ours; Google's load balancers use 600
MIN_THREADS = 8  # requests one function answers at once, even on a 1-core machine


def server_options(host: str, port: int) -> dict[str, Any]:
    """gunicorn's settings: functions-framework's, with a long keep-alive and no worker timeout."""
    threads = int(os.environ.get("THREADS") or max(MIN_THREADS, (os.cpu_count() or 1) * 4))
    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "threads": threads,
        "keepalive": KEEPALIVE_SECONDS,
        "timeout": 0,  # no worker is killed for a slow request, as functions-framework sets it
        "loglevel": os.environ.get("GUNICORN_LOG_LEVEL", "error"),
        "limit_request_line": 0,
    }


def serve(app: Any, host: str, port: int) -> None:
    """Serve a WSGI app with gunicorn's threaded worker until stopped (its embedding API)."""
    import gunicorn.app.base

    settings = server_options(host, port)

    class Application(gunicorn.app.base.BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Application().run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--signature-type", choices=["http", "cloudevent"], default="http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import functions_framework

    app = functions_framework.create_app(args.target, args.source, args.signature_type)
    serve(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
