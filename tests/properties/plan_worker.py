"""Serve plan sagas in a ``sagalog worker plan_worker`` process (the real-crash property).

Registers sagalog.testing's plan workflow and steps in the default registry,
and logs every step execution as one JSON line (with the wall time) to the
file named by ``PLAN_EFFECTS``, written before the step does anything else,
so the test knows what really ran even when the process is killed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sagalog.engine import DEFAULT_REGISTRY

from sagalog.testing import CURRENT_WORLD, PLAN_REGISTRY, Effect, World

DEFAULT_REGISTRY.workflows.update(PLAN_REGISTRY.workflows)
DEFAULT_REGISTRY.steps.update(PLAN_REGISTRY.steps)


class FileLog(list[Effect]):
    """A list of effects that also appends each one to a file, at once."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def append(self, effect: Effect) -> None:
        row: dict[str, Any] = {"instance": effect.instance_id, "seq": effect.seq,
                               "attempt": effect.attempt, "what": effect.what, "t": time.time()}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())  # one write: lines never interleave
        finally:
            os.close(fd)
        super().append(effect)


if os.environ.get("PLAN_EFFECTS"):
    world = World()
    world.effects = FileLog(os.environ["PLAN_EFFECTS"])
    world.delay = float(os.environ.get("PLAN_STEP_SECONDS", "0.05"))
    CURRENT_WORLD.set(world)  # the worker's tasks start from this context
