"""CSV tables: every table a human may open is CSV, written atomically with stable formatting."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from madseg.io.atomic import atomic_open


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` without its index, floats at full round-trip precision, atomically."""
    write_csv_chunks(path, [df])


def write_csv_chunks(path: str | Path, frames: Iterable[pd.DataFrame]) -> None:
    """Write chunks of one table (same columns) as one CSV, byte for byte :func:`write_csv` of their
    concatenation, atomically: a table too large for memory is written as it is read."""
    with atomic_open(path, "w") as f:
        for i, df in enumerate(frames):
            df.to_csv(f, index=False, header=i == 0, lineterminator="\n")


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
