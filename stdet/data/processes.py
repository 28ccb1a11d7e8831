"""How stdet starts worker processes: DataLoader workers (``data.start_method``) and mini-AVA's
renderers.

A forked worker inherits everything of the process that forks it. A command-line run is a plain single-threaded process, and ``fork`` is the
quickest start. A Jupyter kernel is not: its threads hold ZMQ sockets and locks, and workers forked
from it run several times slower and can break the kernel's sockets (``ZMQError: Socket operation
on non-socket``). There, workers come from a ``forkserver``: a clean process started once, with
torch and stdet's data modules imported, which forks the workers; the kernel itself is never
forked. Worker seeds come from the loader's generator either way, so the batches (and the
weights trained on them) are the same.
"""
from __future__ import annotations

import multiprocessing
import sys

# imported by the forkserver before it forks any worker, so that a worker starts in milliseconds
WORKER_PRELOAD = ["torch", "stdet.data.dataset", "stdet.data.transforms", "stdet.data.frames",
                  "stdet.lfb.bank", "stdet.data.mini_ava"]


def in_jupyter_kernel() -> bool:
    """Whether this process is an IPython kernel (a notebook's, or one nbclient drives)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def worker_context(start_method: str = "auto", workers: int = 1):
    """The multiprocessing context worker processes start from (None: the platform default).
    ``"auto"``: the default (fork on Linux), except inside a Jupyter kernel: a forkserver."""
    if workers == 0:
        return None
    if start_method == "auto":
        if not in_jupyter_kernel():
            return None
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(WORKER_PRELOAD)
    return context
