"""The systemd unit: what the appliance relies on is there, and systemd accepts it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "etc" / "systemd" / "gateway.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_unit_has_supervision_restart_limits_and_sandboxing():
    u = unit()
    service, unit_section = u["Service"], u["Unit"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) == 30
    assert service["Restart"] == "on-failure"
    assert "StartLimitIntervalSec" in unit_section and "StartLimitBurst" in unit_section
    assert service["StateDirectory"] == "gateway"
    assert service["User"] == "gateway"
    assert set(service["SupplementaryGroups"].split()) == {"dialout", "input"}
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert "/sys/class/leds" in service["ReadWritePaths"].split()
    assert "kill -HUP" in service["ExecReload"]


def verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # The unit names the appliance's install path; point it at this checkout's
    # command so that systemd can check the executable too.
    gateway = shutil.which("gateway") or str(ROOT / ".venv" / "bin" / "gateway")
    path = tmp_path / "gateway.service"
    path.write_text(text.replace("/opt/gateway/venv/bin/gateway", gateway))
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    done = verify(UNIT.read_text(), tmp_path)
    complaints = [line for line in done.stderr.splitlines() if "gateway.service" in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_systemd_analyze_verify_would_catch_a_typo(tmp_path):
    done = verify(UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs="), tmp_path)
    assert "Unknown key" in done.stderr
