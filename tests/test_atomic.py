"""Atomic writes: a failed write leaves the old file and no temporary behind, with and without fsync."""

from __future__ import annotations

import pytest

from madseg.io.atomic import atomic_open, write_bytes


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_write_keeps_the_old_file(tmp_path, durable):
    path = tmp_path / "sub" / "a.bin"
    write_bytes(path, b"old", durable=durable)
    with pytest.raises(RuntimeError), atomic_open(path, durable=durable) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]
    write_bytes(path, b"new", durable=durable)
    assert path.read_bytes() == b"new"


def test_only_write_modes():
    with pytest.raises(ValueError, match="supports modes"), atomic_open("x", "a"):
        pass
