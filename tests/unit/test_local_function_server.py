"""The local stack's function servers keep an idle connection open past gunicorn's default 2 s."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

from tuning.local.function_server import KEEPALIVE_SECONDS, server_options
from tuning.local.functions import start_function, stop_function


def test_a_connection_idle_for_longer_than_a_poll_interval_still_answers(tmp_path: Path) -> None:
    # `tuning watch` polls every 2 s on one kept-alive connection: with gunicorn's default
    # keep-alive of 2 s, the server closed it as the next request arrived (RemoteDisconnected).
    server = start_function("status", environ={"PATH": os.environ["PATH"]}, log_dir=tmp_path)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/health")
        first = connection.getresponse()
        first.read()
        time.sleep(2.5)
        connection.request("GET", "/health")
        second = connection.getresponse()
        second.read()
        connection.close()
    finally:
        stop_function(server)

    assert (first.status, second.status) == (200, 200)


def test_the_server_keeps_connections_longer_than_any_client_polls_and_never_kills_workers() -> (
    None
):
    options = server_options("127.0.0.1", 8123)

    assert options["keepalive"] == KEEPALIVE_SECONDS > 30
    assert options["timeout"] == 0
    assert options["threads"] >= 8
