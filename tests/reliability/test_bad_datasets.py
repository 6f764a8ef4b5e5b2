"""Every class of bad dataset is quarantined with a precise reason, left in place, not retried,
and writes nothing to the registry. The adapter is called as the host calls it, so "not
retried" means: the function returns instead of raising."""
from __future__ import annotations

import json

import azure.functions as func
import numpy as np
import pandas as pd
import pytest

from functions import root, train
from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from tests.conftest import to_csv, to_parquet


def _wind(**changes) -> pd.DataFrame:
    df = wind(400, seed=3)
    for key, value in changes.items():
        df[key] = value
    return df


def _nan_target():
    df = wind(400, seed=3)
    df.loc[10, "power_kw"] = np.nan
    return to_csv(df)


def _inf_target():
    df = wind(400, seed=3)
    df.loc[11, "power_kw"] = np.inf
    return to_parquet(df)


def _non_numeric():
    df = wind(400, seed=3).astype({"air_density": object})
    df.loc[41, "air_density"] = "dense"
    return to_csv(df)


def _single_class():
    df = cancer()
    df["target"] = 0
    return to_csv(df)


def _parquet_bomb(frame: pd.DataFrame, **options) -> bytes:
    """A small Parquet file of data many times its size: what write access to datasets/ could drop."""
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd", **options)
    assert len(buf.getvalue()) < 100_000  # under the 500,000-byte file limit by far
    return buf.getvalue()


CASES = {
    # id: (model, file name, bytes, fragment of the reason)
    "empty file": ("wind_power", "a.csv", b"", "is empty"),
    "header only": ("wind_power", "a.csv",
                    b"wind_speed,wind_direction,air_temperature,air_density,turbine_id,power_kw\n",
                    "header but no data rows"),
    "wrong delimiter": ("wind_power", "a.csv", to_csv(wind(300)).replace(b",", b";"), "delimited by ';'"),
    "wrong encoding (Latin-1)": ("wind_power", "a.csv", to_csv(wind(300)).replace(b"T01", "Tö1".encode("latin-1")),
                                 "is not UTF-8 text (invalid byte 0xf6"),
    "wrong encoding (UTF-16)": ("wind_power", "a.csv", to_csv(wind(300)).decode().encode("utf-16"), "NUL bytes"),
    "target missing": ("wind_power", "a.csv", to_csv(wind(300).drop(columns="power_kw")), "missing target 'power_kw'"),
    "feature missing": ("wind_power", "a.csv", to_csv(wind(300).drop(columns="turbine_id")),
                        "missing column(s) 'turbine_id'"),
    "non-numeric value": ("wind_power", "a.csv", _non_numeric(), "row 42 holds 'dense'"),
    "entirely empty column": ("wind_power", "a.csv", to_csv(_wind(wind_direction=np.nan)),
                              "'wind_direction' is entirely empty"),
    "NaN in target": ("wind_power", "a.csv", _nan_target(), "target 'power_kw' has 1 missing"),
    "infinity in target": ("wind_power", "a.parquet", _inf_target(), "target 'power_kw' has 1 missing, infinite"),
    "single class": ("breast_cancer", "a.csv", _single_class(), "single class"),
    "too few rows": ("wind_power", "a.csv", to_csv(wind(20)), "fewer than the spec's minimum of 200"),
    "duplicate columns": ("wind_power", "a.csv", to_csv(wind(300)).replace(b"air_density", b"wind_speed", 1),
                          "duplicate column names: wind_speed"),
    "over the size limit": ("wind_power", "a.csv", b"x" * 600_000 + b"\n1", "over the limit of 500,000 bytes"),
    "unsupported extension": ("wind_power", "a.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'"),
    "folder without a spec": ("solar_power", "a.csv", to_csv(wind(300)), "no spec for model 'solar_power'"),
    "parquet with the wrong schema": ("wind_power", "a.parquet", to_parquet(pd.DataFrame({"x": range(300)})),
                                      "missing"),
    "binary garbage named .csv": ("wind_power", "a.csv", bytes(range(256)) * 20, "not a text CSV"),
    "Parquet of zeros, its size declared": ("wind_power", "a.parquet", _parquet_bomb(
        pd.DataFrame(0.0, index=range(400_000), columns=[*wind(1).columns]).astype({"turbine_id": str}),
        use_dictionary=False), "bytes of data once decompressed"),
    "Parquet of repeated rows, dictionary-encoded": ("wind_power", "a.parquet", _parquet_bomb(
        pd.concat([wind(300, seed=3)] * 400, ignore_index=True)), "bytes of data once decompressed"),
    "a header field over the csv module's limit": ("wind_power", "a.csv", b"c" * 200_000 + b",b\n1,2\n",
                                                   "unreadable header row"),
    "a category no request could carry": ("wind_power", "a.csv", to_csv(_wind(turbine_id="T" * 300)),
                                          "holds a value of 300 characters at row 1, over the 256 a request may send"),
    # Its footer declares one copy of the string: caught while decoding, within a batch.
    "Parquet of one long string": ("wind_power", "a.parquet", _parquet_bomb(_wind(turbine_id="T" * 100_000)),
                                   "decodes to more than 500,000 bytes"),
}


@pytest.fixture
def small_limit_ctx(ctx):
    from dataclasses import replace

    ctx.settings = replace(ctx.settings, max_dataset_bytes=500_000)
    root.use(ctx)
    yield ctx
    root.use(None)


def drop_through_the_function(ctx, model: str, file: str, data: bytes) -> None:
    info = ctx.storage.put("datasets", f"{model}/{file}", data)
    stream = func.blob.InputStream(data=data, name=f"datasets/{model}/{file}", length=len(data),
                                   blob_properties={"ETag": info.etag}, metadata={})
    train.train.build().get_user_function()(stream)  # returns: no retry


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_is_quarantined_with_its_reason(small_limit_ctx, case):
    ctx = small_limit_ctx
    model, file, data, fragment = CASES[case]
    drop_through_the_function(ctx, model, file, data)
    [record_blob] = ctx.storage.list("quarantine")
    assert record_blob.name == f"{model}/{file}.json"
    record = json.loads(ctx.storage.get("quarantine", record_blob.name).data)
    assert fragment in record["reason"], record["reason"]
    assert record["dataset"] == f"datasets/{model}/{file}"
    assert ctx.storage.get("datasets", f"{model}/{file}").data == data  # left where it was, unchanged
    assert ctx.storage.list("registry") == []
    assert ctx.bus.receive(ctx.settings.queue_convert) == []  # nothing handed on


def test_extra_columns_are_ignored_and_reported(small_limit_ctx):
    from dataclasses import replace

    ctx = small_limit_ctx
    ctx.settings = replace(ctx.settings, max_dataset_bytes=10_000_000)
    df = wind(400, seed=3).assign(site_notes="calm", operator="x")
    drop_through_the_function(ctx, "wind_power", "extra.parquet", to_parquet(df))
    assert ctx.storage.list("quarantine") == []
    [status] = [b for b in ctx.storage.list("runs", "wind_power/") if b.name.endswith("/train.json")]
    record = json.loads(ctx.storage.get("runs", status.name).data)
    assert record["dataset"]["validation"]["extra_columns_ignored"] == ["operator", "site_notes"]


def test_a_reason_quoting_megabytes_of_column_names_is_recorded_bounded(small_limit_ctx):
    # Write access to datasets/ is not a way to fill the quarantine, the run records or the log
    # (each writes the error's message, bounded where the error is made: shared.core.errors).
    ctx = small_limit_ctx
    name = "c" * 100_000
    drop_through_the_function(ctx, "wind_power", "a.csv", f"{name},{name}x,{name}y\n1,2,3\n".encode())
    blob = ctx.storage.get("quarantine", "wind_power/a.csv.json")
    assert len(blob.data) < 5_000, len(blob.data)
    assert "missing column(s) 'wind_speed'" in json.loads(blob.data)["reason"]
    [run] = [b for b in ctx.storage.list("runs", "wind_power/") if b.name.endswith("/status.json")]
    assert len(ctx.storage.get("runs", run.name).data) < 10_000
