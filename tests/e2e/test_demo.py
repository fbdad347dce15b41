"""`make demo` as a new operator runs it: the fleet backup, the restore and the verification all succeed.

The demo is what the README sends a new user to first, so a change that breaks it (as refusing to verify
on the production instance once did, while the demo verified on web-1 itself) must fail the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_demo_backs_up_restores_and_verifies():
    if os.geteuid() != 0:
        pytest.skip("the demo loop-mounts and freezes its data volume, which needs root")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tools", "demo.py")], capture_output=True,
                          text=True, timeout=600, check=False, cwd=ROOT, env=dict(os.environ, NO_COLOR="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "4 hosts application-consistent; legacy-1 failed because its agent is offline" in out, out[-4000:]
    assert "web-1's shop database holds 1000 orders again" in out, out[-4000:]
    assert "application (command): ok: ok 1000 orders" in out, out[-4000:]
