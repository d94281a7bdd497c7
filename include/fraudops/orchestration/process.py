"""Finding the programs fraudops starts (``fraudops``, ``airflow``, ``mlflow``).

Standard library only: the CLI uses this before any Airflow configuration exists, and
importing Airflow would read (and create) a default ``~/airflow``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def resolve_executable(command: Sequence[str]) -> list[str]:
    """``command`` with its program resolved: on ``PATH``, else next to this Python.

    An Airflow started by absolute path (``.venv/bin/airflow``) may not have the virtual
    environment's ``bin`` on ``PATH``; ``fraudops``, ``airflow`` and ``mlflow`` are
    installed beside the interpreter.
    """
    if not command:
        raise ValueError("empty command")
    program = command[0]
    found = shutil.which(program)
    if found is None:
        sibling = Path(sys.executable).with_name(program)
        if sibling.is_file() and os.access(sibling, os.X_OK):
            found = str(sibling)
    if found is None:
        raise FileNotFoundError(
            f"{program!r} is neither on PATH nor next to {sys.executable}; install fraudops[airflow] there"
        )
    return [found, *command[1:]]


class TrainingCommandError(RuntimeError):
    """The training command failed or wrote no usable summary."""


def run_training_command(
    command: Sequence[str],
    summary_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """Run the training command, stream its output to the log, return its JSON summary.

    ``on_start`` (optional) receives the :class:`subprocess.Popen` (so that a caller can
    stop it). Raises :class:`TrainingCommandError` on a non-zero exit or a missing summary.
    """
    argv = resolve_executable(command)
    log.info("running: %s", " ".join(argv))
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("COLUMNS", "160")  # rich wraps at 80 columns without a terminal
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=child_env,
        start_new_session=True,  # a kill reaches the command's own children too
    )
    if on_start is not None:
        on_start(proc)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        text = line.rstrip()
        log.info("%s", text)
        tail = [*tail[-39:], text]
    code = proc.wait()
    if code != 0:
        raise TrainingCommandError(f"training exited with code {code}; last output:\n" + "\n".join(tail[-15:]))
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingCommandError(f"training wrote no readable summary at {summary_path}: {exc}") from exc
    if not isinstance(summary, dict) or not summary.get("run_id"):
        raise TrainingCommandError(f"the training summary at {summary_path} has no run_id: {summary!r}")
    return summary
