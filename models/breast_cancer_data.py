"""The ``breast_cancer`` example's dataset: scikit-learn's bundled copy, as a table.

    python -m models.breast_cancer_data --out breast_cancer.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from models import write_table


def generate() -> pd.DataFrame:
    """The 569 rows with snake_case column names matching ``breast_cancer.toml``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.frame.copy()
    df.columns = [c.replace(" ", "_") for c in df.columns]
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_table(generate(), args.out)


if __name__ == "__main__":
    main()
