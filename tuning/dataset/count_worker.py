"""The child process that counts tokens with a model's own tokenizer and chat template.

A `gs://` model's files are whatever its uploader wrote: a chat template is a program (jinja2's
sandbox stops it reaching Python's internals, but not looping for hours or building a string of
gigabytes), and a tokenizer.json is parsed by Rust code. So dispatch and the estimate route
never run them in their own process: this worker does, under address-space and CPU-time limits
(`resource.setrlimit`), and its parent (tuning.dataset.isolated) gives it a wall-clock deadline
and kills it past that. A worker that exceeds a limit dies; its parent reports the model as
unreadable, and the function instance serves on.

Protocol, one JSON document per line: the worker answers `{"ready": true}` once the files in
the folder it is given are parsed and the template compiled (or `{"unreadable": message}`);
then each request `{"rows", "format", "split": [name, uri, suffix], "max_length",
"first_row"}` gets `{"lengths": [...]}`, `{"dataset_error": message}` (a row the template
rejects, an image truncation would cut) or `{"cannot_count": message}`.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

from tuning.dataset.rows import RowFormat
from tuning.dataset.splits import SplitFile
from tuning.dataset.tokens import TOKENIZER_FILES, CannotCountError, ChatTokenizer
from tuning.failures import DatasetError


def limit(address_space_bytes: int, cpu_seconds: int) -> None:
    """Past these the kernel ends the process (MemoryError, then SIGXCPU/SIGKILL)."""
    resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def load(folder: Path) -> ChatTokenizer:
    present = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    files = {path.name: path.read_bytes() for path in present}
    tokenizer = ChatTokenizer.from_files(files)
    tokenizer.compile_template()
    return tokenizer


def serve(tokenizer: ChatTokenizer) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        name, uri, suffix = request["split"]
        try:
            lengths = tokenizer.row_lengths(
                request["rows"],
                RowFormat(request["format"]),
                split=SplitFile(name, uri, suffix),
                max_length=request["max_length"],
                first_row=request["first_row"],
            )
        except DatasetError as error:
            send({"dataset_error": error.message})
        except CannotCountError as error:
            send({"cannot_count": str(error)})
        else:
            send({"lengths": lengths})


def main(argv: list[str]) -> int:
    folder, address_space, cpu = Path(argv[0]), int(argv[1]), int(argv[2])
    limit(address_space, cpu)
    from jinja2 import TemplateError

    try:
        tokenizer = load(folder)
    except TemplateError as error:
        send({"unreadable": f"it does not compile: {str(error)[:200]}", "template": True})
        return 0
    except Exception as error:  # tokenizers raises a bare Exception; JSON, UTF-8: ValueError
        send({"unreadable": f"{type(error).__name__}: {str(error)[:200]}"})
        return 0
    send({"ready": True})
    serve(tokenizer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
