"""Fault-injection and mutant hooks for real `gateway run` processes (see sitecustomize.py)."""

from __future__ import annotations

import os
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent


def hook_env(*hooks: str) -> dict[str, str]:
    """Environment for a gateway process that loads `hooks` at start-up."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": f"{HOOK_DIR}{os.pathsep}{path}" if path else str(HOOK_DIR),
        "GATEWAY_TEST_HOOKS": ",".join(hooks),
    }
