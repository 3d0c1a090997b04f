"""The CLI as a newcomer meets it (issue 19): retries, errors, endpoints, progress, job files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from tuning.cli import main
from tuning.cli.client import ApiClient, ClientError, Endpoints, RetryPolicy
from tuning.cli.progress import LineProgress, open_progress
from tuning.cli.request_file import field_line, load_request
from tuning.local.issuer import LocalIssuer


def dropped() -> requests.ConnectionError:
    """What requests raises when the server closes the connection without an answer."""
    reason = urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError("Remote end closed connection")
    )
    return requests.ConnectionError(reason)


def refused() -> requests.ConnectionError:
    cause = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/x", cause))  # type: ignore[arg-type]


class Flaky(requests.Session):
    """Raises the given errors for the first requests, then answers 200 {}."""

    def __init__(self, *errors: Exception) -> None:
        super().__init__()
        self.errors = list(errors)
        self.sent: list[str] = []

    def request(self, method, url, **kwargs):  # type: ignore[no-untyped-def,override]
        self.sent.append(method)
        if self.errors:
            raise self.errors.pop(0)
        response = requests.Response()
        response.status_code, response._content = 200, b'{"job_id": "j1", "status": "queued"}'
        return response


def client(session: requests.Session, tmp_path: Path) -> tuple[ApiClient, list[float]]:
    issuer = LocalIssuer.create(tmp_path / "issuer.pem")
    urls = {
        name: f"http://127.0.0.1:900{i}" for i, name in enumerate(["submit", "status", "delete"])
    }
    endpoints = Endpoints(urls, caller="a@example.com", local_issuer_key=issuer.key_path)
    slept: list[float] = []
    return ApiClient(endpoints, session=session, retry=RetryPolicy(sleep=slept.append)), slept


def test_a_get_whose_connection_was_dropped_is_sent_again_with_backoff(tmp_path: Path) -> None:
    session = Flaky(dropped(), dropped())
    api, slept = client(session, tmp_path)

    job = api.get_job("j1")

    assert job["job_id"] == "j1"
    assert session.sent == ["GET", "GET", "GET"]
    assert len(slept) == 2 and slept[1] > slept[0] > 0  # growing waits


def test_a_post_without_an_idempotency_key_is_never_sent_twice(tmp_path: Path) -> None:
    submitting, cancelling = Flaky(dropped()), Flaky(dropped())

    with pytest.raises(ClientError, match="cannot reach"):
        client(submitting, tmp_path)[0].submit({"processed_dataset_id": "d"})
    with pytest.raises(ClientError, match="cannot reach"):
        client(cancelling, tmp_path)[0].cancel("j1")

    assert submitting.sent == ["POST"]
    assert cancelling.sent == ["POST"]


def test_a_post_with_its_idempotency_key_may_be_sent_again(tmp_path: Path) -> None:
    session = Flaky(dropped())
    api, _ = client(session, tmp_path)

    assert api.submit({"processed_dataset_id": "d"}, idempotency_key="k-1")["job_id"] == "j1"
    assert session.sent == ["POST", "POST"]


def test_a_refused_connection_or_endless_drops_give_up(tmp_path: Path) -> None:
    refusing = Flaky(refused())
    api, slept = client(refusing, tmp_path)
    with pytest.raises(ClientError, match="cannot reach"):
        api.get_job("j1")
    assert refusing.sent == ["GET"] and slept == []  # nothing listens: said at once

    always = Flaky(*[dropped() for _ in range(10)])
    api, slept = client(always, tmp_path)
    with pytest.raises(ClientError, match=r"after 5 tries"):
        api.get_job("j1")
    assert len(always.sent) == 5 and len(slept) == 4


def local_stack_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *names: str) -> None:
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.delenv(f"TUNING_{name}_URL", raising=False)
    for name in names:
        monkeypatch.setenv(f"TUNING_{name.upper()}_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TUNING_LOCAL_ISSUER_KEY", str(LocalIssuer.create(tmp_path / "k").key_path))
    monkeypatch.setenv("TUNING_CONFIG", str(tmp_path / "no-config.yaml"))


def test_list_needs_only_the_status_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_stack_env(monkeypatch, tmp_path, "status")

    code = main(["list"])
    listing = capsys.readouterr().err
    code_submit = main(["submit", str(write(tmp_path / "job.json", "{}"))])
    submitting = capsys.readouterr().err

    assert code == 1 and "cannot reach http://127.0.0.1:9/jobs" in listing  # it got that far
    assert code_submit == 1 and "no submit endpoint: set TUNING_SUBMIT_URL" in submitting


def test_with_json_errors_are_json_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_stack_env(monkeypatch, tmp_path, "status")

    code = main(["--json", "status", "some-job"])

    error = json.loads(capsys.readouterr().err)["error"]
    assert code == 1
    assert error["message"].startswith("cannot reach http://127.0.0.1:9/jobs/some-job")


def test_an_api_error_with_json_carries_its_status_code_and_field() -> None:
    body = {"error": {"code": "invalid_argument", "message": "bad", "field": "job_name"}}
    error = ClientError("422: bad (field: job_name)", status=422, body=body)

    assert error.as_dict() == {
        "message": "422: bad (field: job_name)",
        "status": 422,
        "code": "invalid_argument",
        "field": "job_name",
    }


def test_watch_of_an_unknown_job_prints_the_404_and_no_bar(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_stack_env(monkeypatch, tmp_path, "status")

    def not_found(self, method, url, **kwargs):  # type: ignore[no-untyped-def]
        response = requests.Response()
        response.status_code = 404
        response._content = b'{"error": {"code": "not_found", "message": "no job nope"}}'
        return response

    monkeypatch.setattr(requests.Session, "request", not_found)

    code = main(["watch", "nope"])

    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: 404: no job nope\n"  # no empty bar before it


class NarrowTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 0


def test_a_terminal_without_width_gets_one_line_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.get_terminal_size", lambda fd: __import__("os").terminal_size((0, 0)))
    stream = NarrowTerminal()
    display = open_progress(quiet=False, stream=stream)
    job: dict[str, Any] = {"status": "training", "progress": {"step": 1, "total_steps": 6}}

    for step, loss in ((1, 2.0), (1, 2.0), (3, 1.5)):
        job["progress"].update(step=step, loss=loss, eta_seconds=10 - step)
        display.show(job)
    display.show({"status": "completed", "progress": {"step": 6, "total_steps": 6}})

    assert isinstance(display, LineProgress)
    assert stream.getvalue().splitlines() == [
        "training step 1/6 loss=2.0000 eta=9s",
        "training step 3/6 loss=1.5000 eta=7s",
        "completed step 6/6",
    ]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_broken_yaml_file_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "job.yaml", "processed_dataset_id: d\ntraining_config:\n  method: [LoRA\n"
    )

    with pytest.raises(ClientError) as raised:
        load_request(path)

    message = str(raised.value)
    assert message.startswith(f"{path}, line 4, column 1: ")
    assert "\n" not in message and "Traceback" not in message


def test_a_broken_json_file_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "job.json", '{\n  "processed_dataset_id": "d",\n  "job_name": oops\n}')

    with pytest.raises(ClientError) as raised:
        load_request(path)

    assert str(raised.value) == f"{path}, line 3, column 15: Expecting value"


def test_a_refused_field_is_found_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "job.yaml",
        "processed_dataset_id: d\ntraining_config:\n  base_model_id: x\n"
        "  hyperparameters:\n    epochs: 1\n    learning_rat: 0.1\n",
    )

    assert field_line(path, "training_config.hyperparameters.learning_rat") == 6
    assert field_line(path, "processed_dataset_id") == 1


def test_submit_names_the_line_of_the_field_the_api_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_stack_env(monkeypatch, tmp_path, "submit")
    path = write(
        tmp_path / "job.yaml",
        "processed_dataset_id: d\ntraining_config:\n  hyperparameters:\n    learning_rat: 0.1\n",
    )
    field = "training_config.hyperparameters.learning_rat"

    def refuse(self, method, url, **kwargs):  # type: ignore[no-untyped-def]
        response = requests.Response()
        response.status_code = 422
        response._content = json.dumps(
            {
                "error": {
                    "code": "invalid_argument",
                    "message": f"{field}: unknown field; did you mean 'learning_rate'?",
                    "field": field,
                }
            }
        ).encode()
        return response

    monkeypatch.setattr(requests.Session, "request", refuse)

    code = main(["submit", str(path)])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {path}, line 4: 422: {field}: unknown field; did you mean")


def test_download_picks_a_gguf_quantization(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local_stack_env(monkeypatch, tmp_path, "status")
    asked: list[dict[str, Any]] = []

    def answer(self, method, url, **kwargs):  # type: ignore[no-untyped-def]
        response = requests.Response()
        response.status_code = 200
        if "/jobs/download/" in url:
            asked.append(kwargs.get("params") or {})
            link = "http://127.0.0.1:9/gguf_models/j1/model-q4_k_m.gguf"
            response._content = json.dumps({"download_url": link}).encode()
        else:
            response.raw = io.BytesIO(b"GGUF...")
        return response

    monkeypatch.setattr(requests.Session, "request", answer)

    code = main(["download", "j1", "--quantization", "q4_k_m", "-o", str(tmp_path / "out")])

    assert code == 0, capsys.readouterr().err
    assert asked == [{"artifact": "gguf", "quantization": "q4_k_m"}]
    assert (tmp_path / "out" / "model-q4_k_m.gguf").read_bytes() == b"GGUF..."
