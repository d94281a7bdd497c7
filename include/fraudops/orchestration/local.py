"""The local training runtime: ``fraudops train`` as a child process of the Airflow worker.

This is what the embedded default runs: the very command the GPU pod runs in production
(:func:`fraudops.pipeline.training_command`), on this machine's CPU (or GPU), its output
streamed into the task log, its JSON summary returned as the task's XCom.

Parse-time module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from fraudops.orchestration.links import MLflowRunLink, record_training_run
from fraudops.orchestration.process import TrainingCommandError, run_training_command

__all__ = ["LocalTrainingOperator", "TrainingCommandError", "run_training_command"]

log = logging.getLogger(__name__)

COMMAND_XCOM = "command"


class LocalTrainingOperator(BaseOperator):
    """Train with ``fraudops train`` as a local process; returns the command's JSON summary.

    ``training_set`` and ``data_version`` are templated (they come from upstream XComs);
    ``extra_args`` too (for example ``--epochs {{ params.epochs }}``).
    """

    template_fields: Sequence[str] = ("training_set", "data_version", "extra_args")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#fde6d2"

    def __init__(
        self,
        *,
        training_set: str,
        data_version: str,
        extra_args: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set
        self.data_version = data_version
        self.extra_args = list(extra_args)
        self._proc: subprocess.Popen[str] | None = None

    def _remember(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def execute(self, context: Any) -> dict[str, Any]:
        from fraudops.pipeline import training_command

        with tempfile.TemporaryDirectory(prefix="fraudops-train-") as tmp:
            summary_path = Path(tmp) / "summary.json"
            command = training_command(
                self.training_set,
                data_version=self.data_version,
                summary_path=summary_path,
                extra_args=[str(a) for a in self.extra_args],
            )
            # What ran, for the operator (and for checking it is the pod's command).
            context["ti"].xcom_push(key=COMMAND_XCOM, value=list(command))
            try:
                summary = run_training_command(command, summary_path, on_start=self._remember)
            finally:
                self._proc = None
        record_training_run(self, context, summary)
        return summary

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            log.warning("stopping the training process %d", proc.pid)
            os.killpg(proc.pid, signal.SIGTERM)
