"""Fault-injection and mutant hooks for real `gateway run` processes (see sitecustomize.py)."""

from __future__ import annotations

import os
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent
# The hooks import the gateway while Python starts, before `-m` puts the working
# directory on sys.path: the tree under test goes on PYTHONPATH so that they patch
# the same code the process then runs, not whatever the environment has installed.
SOURCE_ROOT = HOOK_DIR.parent.parent


def hook_env(*hooks: str) -> dict[str, str]:
    """Environment for a gateway process that loads `hooks` at start-up."""
    path = [str(HOOK_DIR), str(SOURCE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "GATEWAY_TEST_HOOKS": ",".join(hooks)}
