"""Where the command finds its deployment: flags, then the environment, then a profile file.

The profile file (``$MLOPS_CONFIG``, default ``~/.config/mlops/config.toml``) holds named
profiles; ``default`` names the one used without ``--profile``/``MLOPS_PROFILE``:

    default = "local"

    [profiles.local]
    url = "http://localhost:7071"
    key = "local-function-key"
    master_key = "local-master-key"

    [profiles.prod]
    url = "https://func-mlops1-serving.azurewebsites.net"
    key_env = "PROD_FUNCTION_KEY"         # read the key from this variable instead of the file
    storage_account_url = "https://stmlops1.blob.core.windows.net"   # drop by identity
    token_scope = "api://<app id>/.default"  # Entra token, where authentication sits in front

Without any of these the command talks to the local host (``make run``) with its keys.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: What ``make run`` serves, and the keys local.settings.example.json gives it.
LOCAL = {"url": "http://localhost:7071", "key": "local-function-key", "master_key": "local-master-key"}
_FIELDS = ("url", "key", "master_key", "token_scope", "data_dir", "storage_account_url", "storage_connection_string",
           "models_dir", "timeout", "retry_seconds")
#: Environment variable of each field.
ENV = {
    "url": "MLOPS_URL",
    "key": "MLOPS_KEY",
    "master_key": "MLOPS_MASTER_KEY",
    "token_scope": "MLOPS_TOKEN_SCOPE",
    "data_dir": "MLOPS_DATA_DIR",
    "storage_account_url": "MlopsStorage__blobServiceUri",
    "storage_connection_string": "MlopsStorage",
    "models_dir": "MLOPS_MODELS_DIR",
    "timeout": "MLOPS_TIMEOUT",
    "retry_seconds": "MLOPS_RETRY_SECONDS",
}


class ConfigError(Exception):
    """The profile file or a setting cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Target:
    """One deployment: its API and, for ``drop``, its storage."""

    url: str
    key: str | None = None
    master_key: str | None = None
    token_scope: str | None = None
    data_dir: str | None = None
    storage_account_url: str | None = None
    storage_connection_string: str | None = None
    models_dir: str = "models"
    timeout: float = 30.0
    retry_seconds: float = 60.0
    profile: str | None = None

    def client(self):
        """A client of this deployment's HTTP API."""
        from mlops.client import MlopsClient

        return MlopsClient(self.url, key=self.key, master_key=self.master_key, token_scope=self.token_scope,
                           timeout=self.timeout, retry_seconds=self.retry_seconds)

    def storage_env(self) -> dict[str, str]:
        """The app settings that open this deployment's storage through ``shared.storage``:
        a connection string, an account URL (Entra identity), or the local data folder."""
        env = {k: v for k, v in os.environ.items()}
        if self.storage_connection_string:
            env.update({"MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage": self.storage_connection_string})
        elif self.storage_account_url:
            env.update({"MLOPS_STORAGE_BACKEND": "azure", "MlopsStorage__blobServiceUri": self.storage_account_url})
            env.pop("MlopsStorage", None)
        if self.data_dir:
            # relative to where the command runs (shared's settings read it against the project)
            env["MLOPS_DATA_DIR"] = str(Path(self.data_dir).expanduser().resolve())
        return env


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("MLOPS_CONFIG") or Path.home() / ".config" / "mlops" / "config.toml").expanduser()


def _profile(path: Path, name: str | None) -> tuple[str | None, dict[str, Any]]:
    if not path.is_file():
        if name:
            raise ConfigError(f"profile {name!r} asked for, but there is no profile file at {path}")
        return None, {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    profiles = data.get("profiles", {})
    chosen = name or data.get("default")
    if chosen is None:
        return None, {}
    if chosen not in profiles or not isinstance(profiles[chosen], dict):
        raise ConfigError(f"{path}: no profile {chosen!r}; it has {', '.join(profiles) or 'none'}")
    values = dict(profiles[chosen])
    for field_ in ("key", "master_key"):
        ref = values.pop(f"{field_}_env", None)
        if ref:
            if ref not in os.environ:
                raise ConfigError(f"{path}: profile {chosen!r} reads {field_} from ${ref}, which is not set")
            values[field_] = os.environ[ref]
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: profile {chosen!r}: unknown key {unknown[0]!r}; allowed: {', '.join(_FIELDS)}")
    return chosen, values


def _is_local(url: str) -> bool:
    """Whether ``url`` is a local host on this machine, on any port (``make run PORT=7072``)."""
    parts = urlsplit(url.strip())
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Target:
    """The deployment to talk to: each field from a flag, else the environment, else the profile,
    else the local host's defaults (the local keys only when the URL is the profile's or local)."""
    env = os.environ if env is None else env
    name, values = _profile(config_path(env), flags.get("profile") or env.get("MLOPS_PROFILE") or None)
    merged: dict[str, Any] = {}
    for f in _FIELDS:
        if flags.get(f) not in (None, ""):
            merged[f] = flags[f]
        elif env.get(ENV[f], "").strip():
            merged[f] = env[ENV[f]].strip()
        elif f in values:
            merged[f] = values[f]
    if "url" not in merged or name is None and _is_local(merged["url"]):
        merged = {**LOCAL, **merged}
    try:
        for f in ("timeout", "retry_seconds"):
            if f in merged:
                merged[f] = float(merged[f])
    except ValueError as exc:
        raise ConfigError(f"timeout and retry_seconds must be numbers: {exc}") from None
    return replace(Target(url=merged.pop("url")), **merged, profile=name)
