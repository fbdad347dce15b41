"""Runs an agent command for real on this machine (instances with ``execution: local``).

Output goes to files, not pipes, as the real agents do: a script that leaves a detached helper
behind (a thaw watchdog, for instance) must not keep the command "running" until the helper
exits.  On timeout the whole process group is killed; helpers that started their own session
are deliberately left alone, as on a real instance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Optional

INTERPRETERS = {
    "bash": ["bash", "-c"],
    "sh": ["sh", "-c"],
    "python": ["python3", "-c"],
}


@dataclass
class LocalResult:
    exit_code: int
    stdout: str
    stderr: str
    started: float  # epoch seconds
    finished: float
    timed_out: bool = False


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def run_local(script: str, interpreter: str = "bash", timeout: Optional[float] = 3600,
              env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> LocalResult:
    """Run ``script`` with ``interpreter`` in its own process group.

    ``env`` is added to this process's environment.  A timed-out run is killed (whole group) and
    reported with ``timed_out=True`` and exit code -1, like an agent's execution timeout.
    """
    argv = list(INTERPRETERS.get(interpreter, [interpreter, "-c"])) + [script]
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.time()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env,
                                cwd=cwd or "/", start_new_session=True)
        timed_out = False
        try:
            exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            exit_code = -1
        finished = time.time()
        return LocalResult(exit_code=exit_code, stdout=_read(out), stderr=_read(err), started=started,
                           finished=finished, timed_out=timed_out)
