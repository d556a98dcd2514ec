"""Test-only kill hook, imported by every Python process started with this folder on PYTHONPATH.

The resume tests put ``tests/killhook`` on ``PYTHONPATH`` (:func:`env`), so that the ``pupsnr``
process they start, its local Dask workers and the processes of Dask's ``processes`` scheduler
all import this module at start-up (Python's ``site`` imports ``sitecustomize``). It installs a
logging handler on pupsnr's loggers that kills

* the whole process group when the durable moment named in ``$PUPSNR_KILL_AT`` is logged
  (``ingest:planned``, ``run:unit:3``, ...: :func:`pupsnr_dask.store.journal.durable_moment`),
  as after a power cut;
* its own process when a worker starts loading the file named in ``$PUPSNR_KILL_WORKER_ON``
  (the ``ingest:load`` event), as a decoder that crashes or runs out of memory.

The library knows nothing of this: it only logs named events (``extra={"pupsnr_event": ...}``).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

#: Durable moment at which the process group is SIGKILLed.
KILL_AT_ENV = "PUPSNR_KILL_AT"
#: Relative path of the file whose loading SIGKILLs the worker process loading it.
KILL_WORKER_ENV = "PUPSNR_KILL_WORKER_ON"
#: This folder: put it on PYTHONPATH to install the hook in new processes.
HERE = Path(__file__).resolve().parent
#: The loggers the hook listens to, and the record attribute naming an event.
LOGGERS = ("pupsnr_dask.journal", "pupsnr_dask.ingest")
EVENT = "pupsnr_event"


class KillHandler(logging.Handler):
    """SIGKILL at the event named in the environment (read when the event is logged)."""

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT, None)
        if event is None:
            return
        if event == os.environ.get(KILL_AT_ENV):
            os.killpg(os.getpgrp(), signal.SIGKILL)
        target = os.environ.get(KILL_WORKER_ENV)
        if event == "ingest:load" and target and getattr(record, "source", None) == target:
            os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    """Attach :class:`KillHandler` to pupsnr's loggers (once); let their debug records through."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, KillHandler) for h in logger.handlers):
            logger.addHandler(KillHandler(logging.DEBUG))
        logger.setLevel(logging.DEBUG)
        logger.disabled = False


def env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """An environment for a child process with this hook on PYTHONPATH (first) and ``extra``."""
    out = dict(os.environ if base is None else base)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), out.get("PYTHONPATH", "")) if p)
    out.update(extra)
    return out


if os.environ.get(KILL_AT_ENV) or os.environ.get(KILL_WORKER_ENV):
    install()
