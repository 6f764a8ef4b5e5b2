"""Fault injection for the crash and disk-fault tests.

``MLOPS_FAULT_KILL_AT=<point>`` makes the process SIGKILL itself when it reaches that
point: no cleanup, no flush, exactly like a pulled plug. Unset (always, in production),
``point`` costs one environment lookup.

``MLOPS_FAULT_DISK_FULL_FILE=<path>``: while that file exists, the embedded storage's
writes fail with ``ENOSPC`` exactly as a full disk makes them fail (every process on the
data folder sees it at once: the host, and the fit processes it starts). Unset, one lookup.
"""
from __future__ import annotations

import errno
import os
import signal

POINTS = (
    "train:after_artifacts",      # pipeline and hold-out saved, no train record, nothing sent
    "train:before_send",          # train record written, message to convert not sent
    "convert:after_onnx",         # model.onnx saved in the run, no convert record
    "register:after_model_file",  # registry model.onnx written, manifest not: mid registry write
    "register:after_manifest",    # version committed, message to promote not sent
    "promote:after_alias",        # production moved, decision not recorded
    "registry:after_alias_before_audit",  # alias moved, its audit entry not yet written
)


def point(name: str) -> None:
    if os.environ.get("MLOPS_FAULT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def disk_full() -> None:
    """Raise ``OSError(ENOSPC)`` while the disk-full flag file exists."""
    flag = os.environ.get("MLOPS_FAULT_DISK_FULL_FILE")
    if flag and os.path.exists(flag):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
