"""Fault injection for the crash tests.

``MLOPS_FAULT_KILL_AT=<point>`` makes the process SIGKILL itself when it reaches that
point: no cleanup, no flush, exactly like a pulled plug. Unset (always, in production),
``point`` costs one environment lookup.
"""
from __future__ import annotations

import os
import signal

POINTS = (
    "train:after_artifacts",      # pipeline and hold-out saved, no train record, nothing sent
    "train:before_send",          # train record written, message to convert not sent
    "convert:after_onnx",         # model.onnx saved in the run, no convert record
    "register:after_model_file",  # registry model.onnx written, manifest not: mid registry write
    "register:after_manifest",    # version committed, message to promote not sent
    "promote:after_alias",        # production moved, decision not recorded
)


def point(name: str) -> None:
    if os.environ.get("MLOPS_FAULT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
