"""Worker processes that stop with the process that started them.

A stage that trains candidates, decodes a pool or renders a world in a pool of processes must not leave them
computing for nobody when it is killed (`kill`, a CI timeout, a closed terminal): each worker runs
:func:`stop_with_parent` first, as the pool's initializer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent() -> None:
    """Have Linux send this process SIGTERM when the thread that started it exits; elsewhere a no-op.

    Pools start their workers from the thread that submits work (the stage's main thread), so the signal comes
    when the stage's process ends, however it ends.
    """
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the request took effect: nobody will be told
        os.kill(os.getpid(), signal.SIGTERM)
