"""The shipped configuration files are valid."""

from pathlib import Path

from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_appliance_config_loads_with_appliance_values():
    config = load_config(ROOT / "etc" / "gateway.yaml")
    assert config.state_dir == Path("/var/lib/gateway")
    assert config.ingest.listen == ("0.0.0.0:50001",)
    assert config.ledger.fsync == "batch"
