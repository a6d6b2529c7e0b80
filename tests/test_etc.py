"""The shipped configuration files are valid."""

from pathlib import Path

from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_appliance_config_loads_with_appliance_values():
    config = load_config(ROOT / "etc" / "gateway.yaml")
    assert config.state_dir == Path("/var/lib/gateway")
    assert config.ingest.listen == ("0.0.0.0:50001",)
    assert config.ledger.fsync == "batch"


def test_appliance_config_prints_nothing_until_a_printer_is_configured():
    config = load_config(ROOT / "etc" / "gateway.yaml")
    assert config.printers == {} and config.routes == () and config.reports.daily is None


def test_the_commented_printer_example_is_valid(tmp_path):
    text = (ROOT / "etc" / "gateway.yaml").read_text()
    start = text.index("# printers:")
    block = []
    for line in text[start:].splitlines():  # the commented block, up to its end
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    example = "\n".join(block)
    path = tmp_path / "example.yaml"
    path.write_text(example + "\n")
    config = load_config(path)
    assert config.printers["counter"].language == "escpos"
    assert config.routes[0].printer == ("counter",)
    assert config.reports.daily is not None and config.reports.daily.at == "02:00"


def test_avahi_advertises_the_ingest_port_under_its_own_type():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "etc" / "avahi" / "gateway.service").getroot()
    service = root.find("service")
    assert service is not None
    kind = service.findtext("type")
    assert kind == "_print-gateway._tcp"
    assert kind not in ("_ipp._tcp", "_printer._tcp", "_pdl-datastream._tcp")
    port = int(service.findtext("port") or 0)
    configured = load_config(ROOT / "etc" / "gateway.yaml").ingest.listen[0]
    assert configured.endswith(f":{port}")


def test_appliance_config_names_the_front_panel_of_the_image():
    config = load_config(ROOT / "etc" / "gateway.yaml")
    assert config.board.button.device == "reprint"
    assert config.board.leds.status == "/sys/class/leds/gw-status"
    overlays = (ROOT / "image" / "config.txt.append").read_text()
    assert "label=reprint" in overlays and "label=gw-status" in overlays
