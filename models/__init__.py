"""Model specs (``*.toml``) and the example-data generators that go with them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def write_table(df: pd.DataFrame, out: Path) -> None:
    """Write ``df`` as Parquet or CSV by the file's extension, and say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    print(f"wrote {len(df)} rows to {out}")
