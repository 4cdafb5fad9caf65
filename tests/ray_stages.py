"""Model stages for the Ray tests, imported by Ray's worker processes: they pause on files the test controls."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from slowfast_zoo.tasks.ray_data import EmbedClips

#: how long a paused stage waits for the test before it gives up (a failing test, not a timing assumption)
GIVE_UP_S = 120.0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created {path}")
        time.sleep(0.02)


class PausedEmbed(EmbedClips):
    """EmbedClips that, until ``control/go`` exists, announces its process in ``control/started-<pid>`` and waits
    for ``go`` (the test kills the process meanwhile)."""

    def __init__(self, model: str, *, control: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.control = Path(control)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        go = self.control / "go"
        if not go.exists():
            (self.control / f"started-{os.getpid()}").touch()
            _wait_for(go)
        return super().__call__(batch)
