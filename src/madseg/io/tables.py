"""CSV tables: every table a human may open is CSV, written atomically with stable formatting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from madseg.io.atomic import atomic_open


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` without its index, floats at full round-trip precision, atomically."""
    with atomic_open(path, "w") as f:
        df.to_csv(f, index=False, lineterminator="\n")


def read_csv(path: str | Path, required: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV table; raise ValueError if a required column is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"id": str, "image_id": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; has {list(df.columns)}")
    return df
