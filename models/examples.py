"""The two example datasets the README's first command drops into ``datasets/``."""
from __future__ import annotations

import io

from models import breast_cancer_data, wind_power_data


def example_datasets(wind_rows: int = 20_000) -> dict[str, tuple[str, bytes]]:
    """``{model: (file name, bytes)}`` for the example models."""
    wind = io.BytesIO()
    wind_power_data.generate(wind_rows, seed=1, regime="summer").to_parquet(wind, index=False)
    cancer = breast_cancer_data.generate().to_csv(index=False).encode()
    return {
        "wind_power": ("example-summer.parquet", wind.getvalue()),
        "breast_cancer": ("example.csv", cancer),
    }
