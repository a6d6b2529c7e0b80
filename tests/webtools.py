"""Support for the console's integration and browser tests: a gateway with web.listen.

`web_gateway` starts the real `gateway run` with the console on a free
loopback port, a file printer, and accounts made with `gateway user add`
(one per role, the same password) before the first start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.gatewayproc import ROOT, GatewayProcess, free_port

PASSWORD = "correct horse battery"
ROLES = {"auditor": "audrey", "operator": "otto", "admin": "ada"}


def add_users(state_dir: Path) -> None:
    for role, name in ROLES.items():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "user",
                "add",
                name,
                "--role",
                role,
                "--state",
                str(state_dir),
            ],
            input=f"{PASSWORD}\n{PASSWORD}\n",
            text=True,
            check=True,
            cwd=ROOT,
            timeout=60,
            capture_output=True,
        )


def web_gateway(tmp_path: Path, **overrides) -> tuple[GatewayProcess, str]:
    """(the gateway, its console's base URL)."""
    add_users(tmp_path / "state")
    port = free_port()
    config = {
        "web": {"listen": [f"127.0.0.1:{port}"]},
        "printers": {"paper": {"uri": f"file:{tmp_path / 'printed'}"}},
        "routes": [{"printer": "paper", "match": {"event_type": "receipt.print"}}],
        **overrides,
    }
    gateway = GatewayProcess(tmp_path, **config)
    return gateway, f"http://127.0.0.1:{port}"


def send_events(gateway: GatewayProcess, lines: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "send", "--ack", "--port", str(gateway.port)],
        input="".join(line + "\n" for line in lines),
        text=True,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def query_all_csv(gateway: GatewayProcess, *filters: str) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "query",
            "--all",
            "--format",
            "csv",
            "--state",
            str(gateway.state_dir),
            *filters,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def system_entries(gateway: GatewayProcess, name: str) -> list[dict]:
    """The system entries called `name`, as `gateway query --all --format jsonl` gives them."""
    import json

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "query",
            "--all",
            "--format",
            "jsonl",
            "--kind",
            "system",
            "--state",
            str(gateway.state_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return [r for r in records if r.get("name") == name]
