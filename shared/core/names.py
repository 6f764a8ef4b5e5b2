"""Validation of names before they become storage paths (no traversal, no surprises)."""
from __future__ import annotations

import re

from shared.core.errors import InvalidName

MODEL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (lower-case, digits, ``_``, ``-``)."""
    if not isinstance(name, str) or not MODEL_PATTERN.match(name):
        raise InvalidName(
            f"invalid model name {name!r}: use 1-63 lower-case letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return name


def alias_name(name: str) -> str:
    """Return ``name`` if it is a valid alias name such as ``production``."""
    if not isinstance(name, str) or not ALIAS_PATTERN.match(name):
        raise InvalidName(f"invalid alias name {name!r}")
    return name


def file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name: no folders, no ``..``, no hidden files."""
    if not isinstance(name, str) or not _FILE.match(name) or ".." in name:
        raise InvalidName(
            f"invalid file name {name!r}: use letters, digits, '.', '_' or '-', no folders"
        )
    return name


def run_id(value: str) -> str:
    """Return ``value`` if it is a well-formed run id."""
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9-]{1,64}", value):
        raise InvalidName(f"invalid run id {value!r}")
    return value
