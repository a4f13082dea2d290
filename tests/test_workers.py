"""Workers stop with the process that started them: a killed stage leaves nothing computing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PARENT = textwrap.dedent(
    """
    import os, signal, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pathlib import Path

    from madseg.workers import stop_with_parent

    def work(path):
        Path(path).write_text(str(os.getpid()))
        time.sleep(120)

    if __name__ == "__main__":
        pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=stop_with_parent)
        pool.submit(work, sys.argv[1])
        while not Path(sys.argv[1]).exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` or a CI timeout would: no clean-up runs
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead: it only waits for whoever adopted it to read its status
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_pool_worker_stops_when_its_parent_is_killed(tmp_path):
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(PARENT)
    done = subprocess.run([sys.executable, str(script), str(pid_file)], timeout=60)
    assert done.returncode == -9
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the worker outlived its killed parent"
