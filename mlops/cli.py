"""The ``mlops`` command: one verb per object of a deployment, over its HTTP API.

Exit codes (also in ``mlops --help`` and docs/cli.md):

    0  done (for watch: the run's version is served, or in rollout)
    1  an error: the API refused the request, a file cannot be read, a spec cannot be made
    2  usage: an unknown verb or option, a missing argument, a confirmation not given
    3  done, and the answer is no: the run was quarantined, failed, rejected or a duplicate,
       or its rollout ended without promoting; the monitor's verdict is drift or degraded
    4  not found: no such model, version, run or report
    5  not allowed: a missing or wrong key (401/403), no master key for an operator verb
    6  unavailable: the deployment cannot be reached, stayed 503 past the retry budget, or a
       wait ran past its timeout

Errors are one line on stderr (``mlops: ...``), never a traceback.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from mlops.config import ConfigError, Target, resolve

OK, ERROR, USAGE, NEGATIVE, NOT_FOUND, NOT_ALLOWED, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
#: The table above, as ``mlops --help`` shows it (``\b``: click keeps the lines as they are).
EXIT_CODES = "\b\nExit codes:\n" + "\n".join(
    line[2:] for line in __doc__[__doc__.index("    0  done"):__doc__.index("Errors are")].rstrip().splitlines())


class Failure(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- output ----------------------------------------------------------------------------------
def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    _console().print(table)


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _is_terminal() -> bool:
    return sys.stdout.isatty()


# -- context ---------------------------------------------------------------------------------
class Obj:
    """What every verb needs: the resolved deployment and a client built on first use."""

    def __init__(self, flags: dict[str, Any]) -> None:
        self.flags = flags
        self._target: Target | None = None
        self._client = None

    @property
    def target(self) -> Target:
        if self._target is None:
            try:
                self._target = resolve(self.flags)
            except ConfigError as exc:
                raise Failure(str(exc), USAGE) from None
        return self._target

    @property
    def client(self):
        if self._client is None:
            self._client = self.target.client()
        return self._client

    def models_dir(self) -> Path:
        return Path(self.target.models_dir).expanduser()

    def shared_context(self):
        """The deployment's storage and bus through shared's ports (operator verbs only)."""
        from shared.context import Context
        from shared.core.settings import Settings

        try:
            return Context.from_settings(Settings.from_env(self.target.storage_env()))
        except ValueError as exc:
            raise Failure(str(exc), USAGE) from None


pass_obj = click.make_pass_decorator(Obj)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.option("--url", help="The deployment's base URL [env MLOPS_URL; default http://localhost:7071].")
@click.option("--key", help="A function key [env MLOPS_KEY].")
@click.option("--master-key", help="The master key, for promote/rollback/monitor --run [env MLOPS_MASTER_KEY].")
@click.option("--profile", help="A profile of the profile file [env MLOPS_PROFILE; file MLOPS_CONFIG or "
                                "~/.config/mlops/config.toml].")
@click.option("--token-scope", help="Send an Entra token for this scope too [env MLOPS_TOKEN_SCOPE].")
@click.option("--models-dir", help="Where specs are written [env MLOPS_MODELS_DIR; default models].")
@click.option("--data-dir", help="The local host's data folder, for drop [env MLOPS_DATA_DIR].")
@click.option("--storage-account-url", help="Drop into this storage account with your Entra identity "
                                            "[env MlopsStorage__blobServiceUri].")
@click.option("--connection-string", "storage_connection_string",
              help="Drop into the storage account of this connection string [env MlopsStorage].")
@click.option("--timeout", type=float, help="Seconds a request may take [env MLOPS_TIMEOUT; default 30].")
@click.pass_context
def cli(ctx: click.Context, **flags: Any) -> None:
    """Train, serve and watch models on a deployment (the local host or Azure Functions).

    \b
    Add your own model:
      mlops init wine.csv --target cultivar        # writes models/wine.toml
      mlops drop wine.csv --model wine --watch     # trains, promotes, serves
      mlops predict wine --file rows.csv --out predictions.csv
    """
    ctx.obj = Obj(flags)


# -- init ------------------------------------------------------------------------------------
@cli.command()
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="The column to predict.")
@click.option("--model", help="The model's name [default: from the file name].")
@click.option("--task", type=click.Choice(["regression", "binary", "multiclass"]), help="Override the task.")
@click.option("--max-categories", type=int, default=100, show_default=True,
              help="Most distinct values a categorical feature may have.")
@click.option("--exclude", multiple=True, help="Leave this column out (repeatable).")
@click.option("--categorical", multiple=True, help="Treat this column as categorical (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
@json_option
@pass_obj
def init(obj: Obj, dataset: Path, target: str, model: str | None, task: str | None, max_categories: int,
         exclude: tuple[str, ...], categorical: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Write models/NAME.toml from a CSV or Parquet DATASET, and say what was decided and why."""
    from mlops.init import InitError, build_spec
    from shared.core.errors import MlopsError

    if not dataset.is_file():
        raise Failure(f"{dataset}: no such file")
    try:
        result = build_spec(dataset, target, model=model, models_dir=obj.models_dir(), max_categories=max_categories,
                            task=task, exclude=exclude, categorical=categorical)
    except InitError as exc:
        raise Failure(str(exc)) from None
    except MlopsError as exc:
        raise Failure(exc.message) from None
    if result.path.exists() and not force:
        raise Failure(f"{result.path} exists; pass --force to overwrite it (or --model another name)")
    result.path.parent.mkdir(parents=True, exist_ok=True)
    result.path.write_text(result.text, encoding="utf-8")
    if as_json:
        _emit_json({"model": result.model, "path": str(result.path), "task": result.task, "metric": result.metric,
                    "floor": result.floor, "baseline": result.baseline, "rows": result.rows,
                    "decisions": [d.__dict__ for d in result.decisions]})
        return
    _table(f"{result.path}: {result.model}, {result.task}, {result.rows} rows", ["column", "role", "why"],
           [[d.column, d.role, d.why] for d in result.decisions])
    click.echo(f"wrote {result.path}; it validates as the pipeline will read it. Next: "
               f"mlops drop {dataset} --model {result.model} --watch")


# -- drop and watch --------------------------------------------------------------------------
def _upload(obj: Obj, file: Path, model: str, name: str | None) -> tuple[str, str, float]:
    """Put ``file`` at ``datasets/<model>/<name>``; (blob path, ETag, time) of the write."""
    from shared.core import names
    from shared.core.errors import MlopsError
    from shared.core.settings import Settings
    from shared.pipeline.data import SUPPORTED_EXTENSIONS
    from shared.ports.storage import open_storage
    from shared.registry import datasets

    target_name = name or file.name
    try:
        names.model_name(model)
        names.file_name(target_name)
    except MlopsError as exc:
        raise Failure(exc.message, USAGE) from None
    if not target_name.lower().endswith(SUPPORTED_EXTENSIONS):
        raise Failure(f"{target_name}: a dataset is {' or '.join(SUPPORTED_EXTENSIONS)}", USAGE)
    size = file.stat().st_size
    chunks = []
    tty = _is_terminal()
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=_console(stderr=True), disable=not tty, transient=True) as bar:
        task = bar.add_task(f"reading {file.name}", total=size)
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                chunks.append(chunk)
                bar.advance(task, len(chunk))
        bar.update(task, description=f"uploading to datasets/{model}/{target_name}")
        try:
            storage = open_storage(Settings.from_env(obj.target.storage_env()))
            started = time.time()
            info = datasets.drop(storage, model, target_name, b"".join(chunks))
        except ValueError as exc:
            raise Failure(str(exc), USAGE) from None
        except MlopsError as exc:
            raise Failure(f"upload failed: {exc.message}", UNAVAILABLE) from None
    click.echo(f"dropped {file} ({size:,} bytes) as {datasets.path(info.name)} (ETag {info.etag})", err=True)
    return datasets.path(info.name), info.etag, started


_STYLE = {"done": "green", "running": "yellow", "failed": "red", "skipped": "dim", "waiting": "dim"}


def _render(progress):
    from rich.table import Table

    title = f"{progress.model}: run {progress.run_id or '(waiting for the trigger)'}"
    table = Table(title=title, show_edge=False, header_style="bold")
    for c in ("stage", "state", "seconds", "detail"):
        table.add_column(c, overflow="fold")
    for stage, state in progress.stages.items():
        secs = progress.seconds.get(stage)
        table.add_row(stage, f"[{_STYLE[state]}]{state}[/]", f"{secs:.2f}" if secs is not None else "",
                      progress.detail.get(stage, ""))
    return table


def _watch(obj: Obj, model: str, *, run_id: str | None = None, dataset: str | None = None,
           etag: str | None = None, since: float | None = None, timeout: float, as_json: bool, plain: bool) -> None:
    from mlops.watch import Progress, follow

    live = _is_terminal() and not plain and not as_json
    seen: dict[str, str] = {}

    def lines(p) -> None:  # without a terminal: one line per change of a stage
        if as_json:
            return
        if p.run_id and seen.get("run") != p.run_id:
            seen["run"] = p.run_id
            click.echo(f"{model}: run {p.run_id}" + (f" ({p.dataset})" if p.dataset else ""))
        for stage, state in p.stages.items():
            text = f"{state} {p.detail.get(stage, '')}".strip()
            if seen.get(stage) != text and state != "waiting":
                seen[stage] = text
                secs = p.seconds.get(stage)
                click.echo(f"{stage:<9} {state:<8}" + (f" {secs:.2f}s" if secs is not None else "")
                           + (f"  {p.detail[stage]}" if stage in p.detail else ""))

    if live:
        from rich.live import Live

        with Live(_render(Progress(model)), console=_console(), refresh_per_second=8, transient=False) as display:
            progress = follow(obj.client, model, run_id=run_id, dataset=dataset, etag=etag, since=since,
                              timeout=timeout, on_update=lambda p: display.update(_render(p)))
    else:
        progress = follow(obj.client, model, run_id=run_id, dataset=dataset, etag=etag, since=since,
                          timeout=timeout, on_update=lines)
    if as_json:
        _emit_json({"model": model, "run_id": progress.run_id, "outcome": progress.outcome,
                    "version": progress.version, "reason": progress.reason, "stages": progress.stages,
                    "seconds": progress.seconds, "detail": progress.detail})
    if progress.served:
        if not as_json:
            click.echo(f"served: {model} version {progress.version} answers")
        return
    if progress.outcome == "rollout":
        if not as_json:
            click.echo(f"in rollout: {model} version {progress.version} earns production on live traffic; "
                       f"mlops rollout {model} shows where it is")
        return
    raise Failure(f"{progress.outcome}: {progress.reason}", NEGATIVE)


watch_options = [
    click.option("--timeout", "wait", type=float, default=900, show_default=True, help="Seconds to wait at most."),
    click.option("--plain", is_flag=True, help="Plain lines even in a terminal."),
]


def _with(options):
    def wrap(f):
        for o in reversed(options):
            f = o(f)
        return f
    return wrap


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The model the dataset trains.")
@click.option("--name", help="The blob's file name [default: FILE's name].")
@click.option("--watch", "then_watch", is_flag=True, help="Then follow the run until it is served.")
@_with(watch_options)
@json_option
@pass_obj
def drop(obj: Obj, file: Path, model: str, name: str | None, then_watch: bool, wait: float, plain: bool,
         as_json: bool) -> None:
    """Upload FILE (CSV or Parquet) to datasets/MODEL/, which starts a run."""
    blob, etag, started = _upload(obj, file, model, name)
    if then_watch:
        _watch(obj, model, dataset=blob, etag=etag, since=started, timeout=wait, as_json=as_json, plain=plain)
    elif as_json:
        _emit_json({"dataset": blob, "etag": etag})


@cli.command()
@click.argument("model")
@click.argument("run_id", required=False)
@_with(watch_options)
@json_option
@pass_obj
def watch(obj: Obj, model: str, run_id: str | None, wait: float, plain: bool, as_json: bool) -> None:
    """Follow RUN_ID (default: MODEL's newest run) stage by stage; exit 0 once it is served."""
    _watch(obj, model, run_id=run_id, timeout=wait, as_json=as_json, plain=plain)


# -- reading ---------------------------------------------------------------------------------
@cli.command()
@json_option
@pass_obj
def models(obj: Obj, as_json: bool) -> None:
    """Every model and its production version."""
    listed = obj.client.models()
    if as_json:
        return _emit_json(listed)
    _table(None, ["model", "production"], [[m["name"], m["production"] if m["production"] is not None else "-"]
                                            for m in listed])


@cli.command()
@click.argument("model")
@click.option("--outcome", type=click.Choice(["promoted", "rejected", "failed", "quarantined", "duplicate", "running",
                                              "rollout", "rolled_back", "superseded", "aborted"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@pass_obj
def runs(obj: Obj, model: str, outcome: str | None, limit: int, as_json: bool) -> None:
    """MODEL's runs, newest first, with what became of each."""
    listed = obj.client.runs(model, outcome=outcome, limit=limit)
    if as_json:
        return _emit_json(listed)
    _table(f"{model}: {len(listed)} run(s)", ["run", "outcome", "version", "dataset", "started", "what happened"],
           [[r.get("run_id") or "-", r.get("outcome"), r.get("version"), (r.get("dataset") or {}).get("name"),
             _when(r.get("created_at")), r.get("explanation")] for r in listed])


@cli.command()
@click.argument("model")
@click.argument("which", required=False, metavar="[VERSION|RUN]")
@json_option
@pass_obj
def show(obj: Obj, model: str, which: str | None, as_json: bool) -> None:
    """MODEL's versions and audit; a VERSION's lineage; or one RUN in full."""
    if which is None:
        data = obj.client.model(model)
    elif which.isdigit():
        data = obj.client.version(model, int(which))
    else:
        data = obj.client.run(model, which)
    if as_json:
        return _emit_json(data)
    if which is None:
        aliases = ", ".join(f"{k} -> {v}" for k, v in (data.get("aliases") or {}).items()) or "none"
        click.echo(f"{model}: aliases {aliases}")
        _table("versions", ["version", "metrics", "dataset", "committed", "run"],
               [[v["version"], ", ".join(f"{k} {x:.4g}" for k, x in v["metrics"].items()
                                         if isinstance(x, (int, float))),
                 v["dataset"], _when(v["committed_at"]), v["run_id"]] for v in data.get("versions", [])])
        _table("audit", ["when", "event", "version", "by", "reason"],
               [[_when(a.get("at")), a.get("event"), a.get("version"), a.get("actor"), a.get("reason")]
                for a in data.get("audit", [])[-10:]])
        return
    rows = []
    for key, value in data.items():
        if value in (None, {}, []):
            continue
        text = json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        rows.append([key, text if len(text) < 400 else text[:400] + "..."])
    _table(f"{model} " + (f"version {which}" if which.isdigit() else f"run {which}"), ["field", "value"], rows)


# -- predicting ------------------------------------------------------------------------------
def _read_rows(path: Path):
    import pandas as pd

    from shared.core.errors import MlopsError
    from shared.pipeline.data import read_table

    try:
        return read_table(path.read_bytes(), path.name)
    except MlopsError as exc:
        raise Failure(exc.message) from None
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise Failure(f"cannot read {path}: {exc}") from None


def _columns(frame, datatypes: dict[str, str], offset: int) -> dict[str, list]:
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {}
    for name, dtype in datatypes.items():
        series = frame[name]
        if dtype == "BYTES":
            out[name] = [None if v is None or (isinstance(v, float) and v != v) else
                         (str(v) if not isinstance(v, bool) else str(v)) for v in series.tolist()]
        else:
            values = pd.to_numeric(series, errors="coerce")
            bad = values.isna().to_numpy() & series.notna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise Failure(f"row {offset + i + 1}: column {name!r} is numeric, not {str(series.iloc[i])[:40]!r}")
            out[name] = values.astype("float64").to_numpy()
    return out


@cli.command()
@click.argument("model")
@click.option("--file", "rows_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Rows to predict: CSV or Parquet with the model's columns (others are kept, not sent).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here: .csv or .parquet [default: CSV on stdout].")
@click.option("--version", type=int, help="Ask this registered version [default: production].")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=2000, show_default=True)
@pass_obj
def predict(obj: Obj, model: str, rows_file: Path, out: Path | None, version: int | None, batch_size: int) -> None:
    """Predict every row of a file, in batches of binary Open Inference Protocol v2 tensors."""
    import numpy as np
    import pandas as pd

    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise Failure(f"{out}: --out must end in .csv or .parquet", USAGE)
    frame = _read_rows(rows_file)
    meta = obj.client.v2_metadata(model, version)
    datatypes = {t["name"]: t["datatype"] for t in meta["inputs"]}
    missing = [c for c in datatypes if c not in frame.columns]
    if missing:
        raise Failure(f"{rows_file.name} has no column {missing[0]!r}; {model} takes "
                      + ", ".join(repr(c) for c in datatypes))
    results: list[pd.DataFrame] = []
    classes: dict[int, list[str] | None] = {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("rows", total=len(frame))
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start:start + batch_size]
            result = obj.client.infer(model, _columns(chunk, datatypes, start), version=version, datatypes=datatypes)
            part = pd.DataFrame(index=chunk.index)
            if "predictions" in result.outputs:
                part["prediction"] = result.outputs["predictions"].astype("float64")
            else:
                labels = result.outputs["label"]
                part["label"] = labels.tolist()
                if result.version not in classes:
                    classes[result.version] = obj.client.version(model, result.version).get("classes")
                names = classes[result.version] or list(range(result.outputs["probabilities"].shape[1]))
                probs = np.asarray(result.outputs["probabilities"], dtype="float64")
                for j, c in enumerate(names):
                    part[f"probability_{c}"] = probs[:, j]
            part["version"] = result.version
            results.append(part)
            bar.advance(task, len(chunk))
    predicted = pd.concat([frame, pd.concat(results)], axis=1) if results else frame
    if out is None:
        predicted.to_csv(sys.stdout, index=False)
    elif out.suffix.lower() == ".parquet":
        predicted.to_parquet(out, index=False)
    else:
        predicted.to_csv(out, index=False)
    versions = sorted({int(v) for v in predicted.get("version", [])})
    click.echo(f"predicted {len(frame):,} rows with {model} version(s) {', '.join(map(str, versions))}"
               + (f" into {out}" if out else ""), err=True)


# -- operating -------------------------------------------------------------------------------
def _move(obj: Obj, model: str, version: int, yes: bool, reason: str | None, rollback: bool) -> None:
    current = next((m["production"] for m in obj.client.models() if m["name"] == model), None)
    if rollback and current is not None and version >= current:
        raise Failure(f"version {version} is not older than production ({current}): use mlops promote", USAGE)
    verb = "roll back" if rollback else "promote"
    if not yes:
        if not sys.stdin.isatty():
            raise Failure(f"{verb} {model} to version {version} needs a confirmation: pass --yes", USAGE)
        if not click.confirm(f"{verb} {model}: production {current} -> {version}?", default=False):
            raise Failure("not confirmed; nothing changed", USAGE)
    reason = reason or ("rollback" if rollback else "promotion") + " by mlops"
    moved = (obj.client.rollback if rollback else obj.client.promote)(model, version, reason)
    click.echo(f"{model}: production {moved.get('previous')} -> {moved.get('version')} (audited: {reason})")


move_options = [
    click.argument("model"), click.argument("version", type=click.IntRange(min=1)),
    click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
    click.option("--reason", help="Recorded in the audit log."),
]


@cli.command()
@_with(move_options)
@pass_obj
def promote(obj: Obj, model: str, version: int, yes: bool, reason: str | None) -> None:
    """Make VERSION production (master key; audited)."""
    _move(obj, model, version, yes, reason, rollback=False)


@cli.command()
@_with(move_options)
@pass_obj
def rollback(obj: Obj, model: str, version: int, yes: bool, reason: str | None) -> None:
    """Make an earlier VERSION production again (master key; audited as a rollback)."""
    _move(obj, model, version, yes, reason, rollback=True)


ROLLOUT_ACTIONS = ("pause", "resume", "abort", "promote-now", "start")
_ROLLOUT_WORDS = {"pause": "pause", "resume": "resume", "abort": "abort", "promote-now": "promote now",
                  "start": "start"}


def _print_rollout(ro: dict[str, Any]) -> None:
    step = ro["step"]
    click.echo(f"{ro['model']}: v{ro['candidate']} against production v{ro['champion']}, {ro['mode']}, "
               f"{ro['status']} at step {step['number']} of {step['of']} ({step['label']}); steps "
               + " -> ".join([*ro["steps"], "100%"]))
    click.echo(f"traffic: {ro['traffic']['split']}")
    if ro.get("last_evaluation"):
        click.echo(f"last evaluated {_when(ro['last_evaluation'].get('at'))}: {ro['last_evaluation'].get('reason')}")

    def figure(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, (int, float)) else "-"

    _table("guardrails", ["guardrail", "figure", "threshold", "state", "detail"],
           [[g["name"], figure(g.get("figure")), figure(g.get("threshold")),
             {True: "breached", False: "clean"}.get(g.get("breached"), "not judged"), g.get("detail")]
            for g in ro.get("guardrails", [])])
    _table("history", ["when", "action", "step", "by", "reason"],
           [[_when(h.get("at")), h.get("action"), h.get("step_label"), h.get("actor"), h.get("reason")]
            for h in ro.get("history", [])])
    if ro.get("actions"):
        click.echo(f"actions: {', '.join(ro['actions'])} (mlops rollout {ro['model']} ACTION --reason ...)")


@cli.command()
@click.argument("model")
@click.argument("action", required=False, type=click.Choice(ROLLOUT_ACTIONS))
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help="Recorded in the audit trail with the action.")
@click.option("--version", type=click.IntRange(min=1), help="start: the version to roll out (a held candidate).")
@json_option
@pass_obj
def rollout(obj: Obj, model: str, action: str | None, yes: bool, reason: str | None, version: int | None,
            as_json: bool) -> None:
    """MODEL's rollout: step, traffic split, guardrails against thresholds, history. With ACTION
    (pause, resume, abort, promote-now, start --version V): do it (master key; audited)."""
    if action is None:
        ro = obj.client.rollout(model)
        return _emit_json(ro) if as_json else _print_rollout(ro)
    if action == "start" and version is None:
        raise Failure("rollout start needs --version: the version to roll out", USAGE)
    if not obj.target.master_key:
        raise Failure(f"rollout {action} needs the master key: --master-key, MLOPS_MASTER_KEY or a profile",
                      NOT_ALLOWED)
    etag = None
    if action != "start":
        seen = obj.client.rollout(model)
        etag = seen["etag"]  # the action applies to the state confirmed here, or is refused (409)
        where = seen["summary"]
    else:
        where = f"start the rollout of v{version} against production"
    words = _ROLLOUT_WORDS[action]
    if not yes:
        if not sys.stdin.isatty():
            raise Failure(f"{words} the rollout of {model} needs a confirmation: pass --yes", USAGE)
        if not click.confirm(f"{words} the rollout of {model} ({where})?", default=False):
            raise Failure("not confirmed; nothing changed", USAGE)
    ro = obj.client.rollout_action(model, action, reason=reason or f"{words} by mlops", actor="mlops",
                                   version=version, if_match=etag)
    if as_json:
        return _emit_json(ro)
    click.echo(f"{model}: {ro['summary']} (audited: {reason or words + ' by mlops'})")


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    drift = report.get("dataset_drift") or {}
    features = report.get("features") or {}
    drifted = list(drift.get("drifted_features") or [])
    return {"model": report.get("model"), "version": report.get("version"), "verdict": report.get("verdict"),
            "rows": report.get("rows"), "window": report.get("window"), "drift_share": drift.get("share"),
            "threshold": drift.get("threshold"), "drifted_features": drifted,
            "features": {f: {k: features[f].get(k) for k in ("test", "p_value", "psi")}
                         for f in drifted if f in features},
            "prediction_drift": (report.get("prediction_drift") or {}).get("drifted"),
            "performance": report.get("performance"), "retraining": report.get("retraining")}


def _print_summary(s: dict[str, Any]) -> None:
    drifted = s["drifted_features"]
    share = f"{len(drifted)} drifted" + (f" (share {s['drift_share']:.0%}, dataset threshold {s['threshold']:.0%})"
                                         if s.get("drift_share") is not None and s.get("threshold") else "")
    click.echo(f"{s['model']} version {s['version']}: verdict {s['verdict']} on {s['rows']} rows; {share}"
               + (": " + ", ".join(drifted) if drifted else ""))
    if drifted:
        _table(None, ["feature", "test", "p-value", "PSI"],
               [[f, v.get("test"), f"{v['p_value']:.3g}" if isinstance(v.get("p_value"), float) else v.get("p_value"),
                 f"{v['psi']:.3g}" if isinstance(v.get("psi"), float) else v.get("psi")]
                for f, v in s["features"].items()])


def _verdict_exit(verdict: str | None) -> None:
    if verdict in ("drift", "degraded"):
        raise Failure(f"verdict {verdict}", NEGATIVE)


@cli.command()
@click.argument("model")
@click.option("--run", "run_now", is_flag=True, help="Run the monitor now (master key) and wait for its report.")
@click.option("--settle", type=float, default=11.0, show_default=True,
              help="Seconds to wait before running: the deployment judges rows logged up to two log flushes "
                   "and a second before the run (2 x MLOPS_INFERENCE_LOG_FLUSH_SECONDS + 1).")
@click.option("--timeout", "wait", type=float, default=120, show_default=True)
@json_option
@pass_obj
def monitor(obj: Obj, model: str, run_now: bool, settle: float, wait: float, as_json: bool) -> None:
    """MODEL's latest drift verdict; with --run, a fresh one. Exit 3 on drift or degraded."""
    if run_now:
        if not obj.target.master_key:
            raise Failure("monitor --run needs the master key: --master-key, MLOPS_MASTER_KEY or a profile",
                          NOT_ALLOWED)
        if not as_json and sys.stderr.isatty():
            click.echo(f"waiting {settle:g} s for the last requests to settle, then running the monitor", err=True)
        report = obj.client.monitor(model, settle_seconds=settle, timeout=wait).report
    else:
        report = obj.client.monitoring_latest(model)
    s = _summary(report)
    if as_json:
        _emit_json(s)
    else:
        _print_summary(s)
    _verdict_exit(s["verdict"])


@cli.command()
@click.argument("model")
@click.option("--id", "report_id", help="A report of the history [default: the latest].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report's HTML page here.")
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser.")
@json_option
@pass_obj
def report(obj: Obj, model: str, report_id: str | None, out: Path | None, open_it: bool, as_json: bool) -> None:
    """MODEL's monitoring report: a summary, its JSON, or its page (--out, --open)."""
    if out or open_it:
        page = obj.client.report_html(model, report_id)
        if out is None:
            import tempfile

            out = Path(tempfile.mkdtemp(prefix="mlops-report-")) / f"{model}.html"
        out.write_bytes(page)
        click.echo(f"wrote {out}", err=True)
        if open_it:
            import webbrowser

            if not webbrowser.open(out.resolve().as_uri()):
                click.echo(f"no browser to open; the page is {out}", err=True)
        return
    data = obj.client.monitoring_report(model, report_id) if report_id else obj.client.monitoring_latest(model)
    if as_json:
        return _emit_json(data)
    _print_summary(_summary(data))
    history = obj.client.monitoring_reports(model, limit=10).get("reports", [])
    _table("history", ["id", "verdict", "rows", "drifted"],
           [[h.get("id"), h.get("verdict"), h.get("rows"), ", ".join(h.get("drifted_features") or [])]
            for h in history])


@cli.command()
@click.option("--model", help="Only this model's datasets.")
@click.option("--all", "show_all", is_flag=True, help="Also refusals a later valid write superseded.")
@json_option
@pass_obj
def quarantine(obj: Obj, model: str | None, show_all: bool, as_json: bool) -> None:
    """Datasets refused before fitting, and why (read from the deployment's storage)."""
    from shared.registry.quarantine import records

    listed = [r for r in records(obj.shared_context().storage, model) if show_all or not r.get("superseded_by")]
    if as_json:
        return _emit_json(listed)
    if not listed:
        click.echo("nothing quarantined")
        return
    _table(None, ["dataset", "code", "when", "reason"],
           [[r.get("dataset"), r.get("code"), _when(r.get("quarantined_at")), r.get("reason")] for r in listed])


@cli.command("dead-letters")
@json_option
@pass_obj
def dead_letters(obj: Obj, as_json: bool) -> None:
    """Dead-lettered messages of the app's queues and poisoned blobs (what `replay` takes)."""
    from shared.ops import list_entries

    entries = list_entries(obj.shared_context())
    if as_json:
        return _emit_json([e.__dict__ for e in entries])
    if not entries:
        click.echo("nothing dead-lettered or poisoned")
        return
    _table(None, ["kind", "queue", "id", "reason"], [[e.kind, e.queue, e.id, e.reason] for e in entries])


@cli.command()
@click.argument("kind", type=click.Choice(["dead-letter", "poison", "event"]))
@click.argument("args", nargs=-1, required=True, metavar="QUEUE SEQ | ID")
@pass_obj
def replay(obj: Obj, kind: str, args: tuple[str, ...]) -> None:
    """Send a dead letter back to its queue (QUEUE SEQ), or make a poisoned blob or the dataset of a
    dead-lettered Event Grid event trigger again (ID)."""
    from shared.ops import EVENT_DEAD_LETTERS, POISON_QUEUE
    from shared.ops import replay as replay_entry

    if kind == "dead-letter" and len(args) != 2:
        raise Failure("replay dead-letter needs QUEUE SEQ (mlops dead-letters shows them)", USAGE)
    if kind in ("poison", "event") and len(args) != 1:
        raise Failure(f"replay {kind} needs the ID that mlops dead-letters shows", USAGE)
    queue, ident = ((args[0], args[1]) if kind == "dead-letter"
                    else (POISON_QUEUE if kind == "poison" else EVENT_DEAD_LETTERS, args[0]))
    click.echo(replay_entry(obj.shared_context(), kind, queue, ident))


# -- entry point -----------------------------------------------------------------------------
def _exit_of_api(exc) -> int:
    if exc.status == 404:
        return NOT_FOUND
    if exc.status in (401, 403) or exc.code == "NO_MASTER_KEY":
        return NOT_ALLOWED
    if exc.status in (0, 503, 502, 504):
        return UNAVAILABLE
    return ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command; every failure is one line on stderr and an exit code from the table."""
    from mlops.client import ApiError

    try:
        cli.main(args=argv, prog_name="mlops", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("mlops: aborted", err=True)
        return USAGE
    except click.exceptions.ClickException as exc:
        exc.show()
        return USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Failure as exc:
        click.echo(f"mlops: {exc}", err=True)
        return exc.code
    except ApiError as exc:
        click.echo(f"mlops: {exc.message} ({exc.status or exc.code}{' ' + exc.code if exc.status else ''})", err=True)
        return _exit_of_api(exc)
    except KeyboardInterrupt:
        click.echo("mlops: interrupted", err=True)
        return 130
    except Exception as exc:  # a user gets one line naming the problem, never a traceback
        from shared.core.errors import MlopsError

        message = exc.message if isinstance(exc, MlopsError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"mlops: {message.splitlines()[0] if message else type(exc).__name__}", err=True)
        return UNAVAILABLE if isinstance(exc, MlopsError) and getattr(exc, "code", "") == "TRANSIENT" else ERROR
    return OK
