"""A small typed client of a deployment's HTTP API (the local host or Azure Functions).

One ``MlopsClient`` per deployment: a base URL, a function key for the read and predict
routes, the master key for the operator routes (alias moves, running a function now) and,
where the deployment sits behind Entra authentication, a token scope. Every call has a
timeout; a 503 that says ``Retry-After`` is retried after that many seconds while the
client's retry budget lasts (a model with no version yet, a storage fault healing), and any
other failure raises :class:`ApiError` with the status, the API's error code and its message.

Predictions go either as JSON records (``predict``) or as binary Open Inference Protocol v2
tensors (``infer``), the form with the least parsing on both sides for large batches.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import quote

import httpx
import numpy as np

from mlops import v2

__all__ = ["ApiError", "InferResult", "MlopsClient", "ModelSummary", "MonitorResult", "RunSummary", "Unreachable"]

#: The alias the serving path reads.
PRODUCTION = "production"


class ApiError(Exception):
    """The deployment answered with an error: status, the API's code and message."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Unreachable(ApiError):
    """No answer at all: connection refused, DNS, a timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "UNREACHABLE", message)


class ModelSummary(TypedDict):
    """One entry of ``GET /api/models``."""

    name: str
    production: int | None


class RunSummary(TypedDict, total=False):
    """One run as ``GET /api/models/{name}/runs`` lists it (``get_run`` adds its lineage)."""

    run_id: str | None
    outcome: str  # promoted | rejected | failed | quarantined | duplicate | running | rollout | rolled_back | ...
    state: str
    explanation: str
    dataset: dict[str, Any] | None
    created_at: float | None
    updated_at: float | None
    version: int | None
    metrics: dict[str, float] | None
    promoted: bool | None
    error: dict[str, Any] | None
    timings: dict[str, float | None]
    decision: dict[str, Any] | None
    quarantine: str | None
    rollout: dict[str, Any] | None  # in rollout, or how its rollout ended



def _segment(value: object) -> str:
    """One path segment, percent-encoded: a name or id holding '/' or '..' stays that one segment
    (and is refused by the API as such) instead of walking to another route."""
    return quote(str(value), safe="")

@dataclass(frozen=True)
class InferResult:
    """The outputs of one v2 ``infer`` call, as arrays, and the version that answered."""

    model: str
    version: int
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class MonitorResult:
    """A monitor run's report as ``mlops monitor --run`` summarises it."""

    model: str
    verdict: str
    rows: int
    drifted_features: list[str]
    drift_share: float | None
    report_id: str | None
    report: dict[str, Any] = field(repr=False)


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    """(code, message) from any of the API's three error shapes, or the status line."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
        return f"HTTP_{resp.status_code}", text[:300]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # this API: {"error": {"code", "message"}}
            return str(err.get("code", f"HTTP_{resp.status_code}")), str(err.get("message", ""))
        if isinstance(err, str):  # v2: {"error": "<message>"}
            return f"HTTP_{resp.status_code}", err
        if "error_code" in body:  # MLflow: {"error_code", "message"}
            return str(body["error_code"]), str(body.get("message", ""))
    return f"HTTP_{resp.status_code}", str(body)[:300]


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: not sent by this API; treat as "no advice"


class MlopsClient:
    """A deployment's HTTP API. ``url`` is the app's base URL (``http://localhost:7071``);
    routes are under ``/api`` and the platform's admin routes under ``/admin``."""

    def __init__(self, url: str, *, key: str | None = None, master_key: str | None = None,
                 token_scope: str | None = None, timeout: float = 30.0, retry_seconds: float = 60.0,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.master_key = master_key
        self.token_scope = token_scope
        self.retry_seconds = retry_seconds
        self._sleep = sleep
        self._credential = None
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  transport=transport, headers={"user-agent": "mlops-cli"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MlopsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------
    def _token(self) -> str:
        """An Entra access token for ``token_scope`` (App Service authentication in front of the app)."""
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential.get_token(self.token_scope).token

    def _headers(self, admin: bool, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        key = self.master_key if admin else (self.key or self.master_key)
        if admin and not key:
            raise ApiError(0, "NO_MASTER_KEY", "this needs the master key: --master-key, MLOPS_MASTER_KEY or a "
                                               "profile's master_key")
        if key:
            headers["x-functions-key"] = key  # a header, never ?code=: keys stay out of URLs and logs
        if self.token_scope:
            headers["authorization"] = f"Bearer {self._token()}"
        return headers

    def request(self, method: str, path: str, *, admin: bool = False, params: Mapping[str, Any] | None = None,
                json: Any = None, content: bytes | None = None, headers: Mapping[str, str] | None = None,
                ok: Iterable[int] = (200,)) -> httpx.Response:
        """One call, retried on 503 with ``Retry-After`` while the retry budget lasts."""
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                resp = self._http.request(method, path, params=params, json=json, content=content,
                                          headers=self._headers(admin, headers))
            except httpx.TimeoutException as exc:
                raise Unreachable(f"{method} {self.url}{path} timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise Unreachable(f"cannot reach {self.url}: {exc}") from None
            if resp.status_code in ok:
                return resp
            wait = _retry_after(resp)
            if resp.status_code == 503 and wait is not None and time.monotonic() + wait < deadline:
                self._sleep(wait)
                continue
            code, message = _error_of(resp)
            raise ApiError(resp.status_code, code, message, retry_after=wait)

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    # -- reading ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /api/health``: liveness and what the answering worker serves."""
        return self._get("/api/health")

    def models(self) -> list[ModelSummary]:
        """Every model with a spec or a registry entry, and its production version."""
        return self._get("/api/models")["models"]

    def model(self, name: str) -> dict[str, Any]:
        """A model's spec summary, versions with metrics, aliases and recent audit."""
        return self._get(f"/api/models/{_segment(name)}")

    def runs(self, name: str, *, outcome: str | None = None, limit: int | None = None) -> list[RunSummary]:
        """The model's runs, newest first (``outcome`` filters, ``limit`` bounds)."""
        return self._get(f"/api/models/{_segment(name)}/runs", outcome=outcome, limit=limit)["runs"]

    def run(self, name: str, run_id: str) -> RunSummary:
        """One run with its lineage: dataset, spec, parameters, timings, metrics, decision, failure."""
        return self._get(f"/api/models/{_segment(name)}/runs/{_segment(run_id)}")

    def version(self, name: str, version: int) -> dict[str, Any]:
        """A version's lineage: run, dataset, spec hash, code, libraries, decision."""
        return self._get(f"/api/models/{_segment(name)}/versions/{int(version)}")

    def v2_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """v2 model metadata: one input tensor per column with its datatype, and the outputs."""
        suffix = f"/versions/{int(version)}" if version is not None else ""
        return self._get(f"/api/v2/models/{_segment(name)}{suffix}")

    def served_version(self, name: str) -> int:
        """The version this deployment's worker serves as production now (MLflow's ``/ping``)."""
        resp = self.request("GET", f"/api/models/{_segment(name)}/ping")
        return int(resp.headers["x-model-version"])

    def monitoring_latest(self, name: str) -> dict[str, Any]:
        """The latest monitoring report, with the last conclusive verdict."""
        return self._get(f"/api/models/{_segment(name)}/monitoring/latest")

    def monitoring_report(self, name: str, report_id: str) -> dict[str, Any]:
        """One monitoring report's JSON."""
        return self._get(f"/api/models/{_segment(name)}/monitoring/reports/{_segment(report_id)}")

    def monitoring_reports(self, name: str, *, limit: int | None = None) -> dict[str, Any]:
        """The monitoring history, newest first."""
        return self._get(f"/api/models/{_segment(name)}/monitoring/reports", limit=limit)

    def report_html(self, name: str, report_id: str | None = None) -> bytes:
        """A monitoring report's page (the latest unless ``report_id``)."""
        path = f"/api/models/{_segment(name)}/monitoring/" + (
            f"reports/{_segment(report_id)}" if report_id else "latest")
        return self.request("GET", path, params={"format": "html"}).content

    # -- predicting ------------------------------------------------------------------------
    def predict(self, name: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """This API's JSON predict on production: ``{"model", "version", "predictions", "request_id"}``."""
        return self.request("POST", f"/api/models/{_segment(name)}/predict",
                            json={"instances": list(records)}).json()

    def infer(self, name: str, columns: Mapping[str, Any], *, version: int | None = None,
              datatypes: Mapping[str, str] | None = None) -> InferResult:
        """v2 ``infer`` with binary tensors in and out: ``columns`` maps each model input to its
        values (numbers, or text for ``BYTES`` inputs; ``None``/NaN is missing).

        ``datatypes`` (input -> ``FP32``|``BYTES``) saves a metadata call per batch."""
        if datatypes is None:
            datatypes = {t["name"]: t["datatype"] for t in self.v2_metadata(name, version)["inputs"]}
        body, header_length = v2.encode_request(columns, datatypes)
        suffix = f"/versions/{int(version)}" if version is not None else ""
        resp = self.request("POST", f"/api/v2/models/{_segment(name)}{suffix}/infer", content=body, headers={
            "content-type": "application/octet-stream", v2.HEADER: str(header_length)})
        head, outputs = v2.decode_response(resp.content, resp.headers.get(v2.HEADER))
        return InferResult(head.get("model_name", name), int(head.get("model_version", 0)), outputs)

    # -- operating -------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int, reason: str) -> dict[str, Any]:
        """Move ``alias`` to ``version`` (master key; audited by the deployment)."""
        return self.request("PUT", f"/api/models/{_segment(name)}/aliases/{_segment(alias)}", admin=True,
                            json={"version": int(version), "reason": reason}).json()

    def promote(self, name: str, version: int, reason: str = "operator promotion") -> dict[str, Any]:
        """Make ``version`` production."""
        return self.set_alias(name, PRODUCTION, version, reason)

    def rollback(self, name: str, version: int, reason: str = "operator rollback") -> dict[str, Any]:
        """Make an earlier ``version`` production again (audited as a rollback)."""
        return self.set_alias(name, PRODUCTION, version, reason)

    def rollout(self, name: str) -> dict[str, Any]:
        """The model's current (or last) rollout: step, traffic split, guardrails, history, ETag."""
        return self._get(f"/api/models/{_segment(name)}/rollout")

    def rollout_action(self, name: str, action: str, *, reason: str = "", actor: str | None = None,
                       version: int | None = None, if_match: str | None = None) -> dict[str, Any]:
        """``pause``, ``resume``, ``abort``, ``promote-now`` or ``start`` (with ``version``) the
        model's rollout (master key; audited). ``if_match``: the ETag read, so the action applies
        to that state only (else 409). Returns the rollout after the action."""
        body: dict[str, Any] = {"reason": reason}
        if actor:
            body["actor"] = actor
        if version is not None:
            body["version"] = int(version)
        return self.request("POST", f"/api/models/{_segment(name)}/rollout/{_segment(action)}", admin=True, json=body,
                            headers={"if-match": if_match} if if_match else None).json()

    def run_function(self, function: str, payload: str = "") -> None:
        """Run a non-HTTP function now through the platform's admin API (master key); 202 when accepted."""
        self.request("POST", f"/admin/functions/{_segment(function)}", admin=True, json={"input": payload},
                     ok=(200, 202))

    def _latest_report_name(self, name: str) -> str | None:
        try:
            latest = self.monitoring_reports(name, limit=1).get("latest") or {}
        except ApiError as exc:
            if exc.status == 404:  # no report yet
                return None
            raise
        return latest.get("report")

    def monitor(self, name: str, *, settle_seconds: float, timeout: float = 120.0,
                poll: float = 0.5) -> MonitorResult:
        """Run the monitor now and wait for ``name``'s next report.

        The monitor's window ends ``settle_seconds`` before it starts (two inference-log flushes
        and a second: rows still in a server's buffer are judged next time), so this first waits
        that long, then triggers the timer function and polls the history until a new report lands.
        """
        last = self._latest_report_name(name)
        self._sleep(settle_seconds)
        self.run_function("monitor")
        deadline = time.monotonic() + timeout
        while True:
            now = self._latest_report_name(name)
            if now is not None and now != last:
                report = self.monitoring_latest(name)
                drift = report.get("dataset_drift") or {}
                return MonitorResult(name, str(report.get("verdict")), int(report.get("rows") or 0),
                                     list(drift.get("drifted_features") or []), drift.get("share"),
                                     now.split("/")[-2] if "/" in now else now, report)
            if time.monotonic() > deadline:
                raise ApiError(0, "TIMEOUT", f"no new monitoring report for {name!r} within {timeout:g} s "
                                              "(is a production version served, and the monitor function enabled?)")
            self._sleep(poll)
