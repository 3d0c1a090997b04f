"""Local file helpers the trainer's stages share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Make `target` the same file as `source`: a hard link (instant, no second copy of a
    multi-GB file), or a copy on a filesystem without hard links."""
    Path(target).unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
