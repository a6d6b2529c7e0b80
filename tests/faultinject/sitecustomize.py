"""Test-only start-up hook: loads the fault and mutant modules a test names.

A test puts this directory first on PYTHONPATH and names modules in
GATEWAY_TEST_HOOKS (comma-separated); each one patches the gateway inside the
`gateway run` process it starts. Nothing outside tests/ knows about it, and
without the variable it does nothing.
"""

import importlib
import os

for _name in filter(None, os.environ.get("GATEWAY_TEST_HOOKS", "").split(",")):
    importlib.import_module(_name.strip())
