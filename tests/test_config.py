"""Configuration: documented defaults, refusals naming file and key, state dir, digest."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


@pytest.fixture(autouse=True)
def no_state_directory(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    assert exc.file == str(path)
    assert str(exc).startswith(f"{path}: {exc.key}: ")
    return exc


# ---- defaults


def check_defaults(config) -> None:
    assert config.ingest.listen == ("127.0.0.1:50001",)
    assert config.ingest.max_line_bytes == 65536
    assert config.ingest.max_connections == 512
    assert config.ingest.idle_timeout_s == 300
    assert config.ledger.fsync == "batch"
    assert config.ledger.segment_bytes == 67108864
    assert config.log.level == "info"
    assert config.state_dir == Path("./var")
    assert config.ledger_dir == Path("./var") / "ledger"


def test_defaults_without_a_file():
    config = load_config()
    check_defaults(config)
    assert config.source == "<defaults>"


def test_empty_file_gives_defaults(tmp_path):
    for text in ["", "\n", "# only a comment\n", "---\n", "~\n"]:
        path = write(tmp_path, text)
        config = load_config(path)
        check_defaults(config)
        assert config.source == str(path)


def test_empty_sections_give_defaults(tmp_path):
    config = load_config(write(tmp_path, "ingest:\nledger:\nlog: {}\n"))
    check_defaults(config)


def test_explicit_values_are_used(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "state_dir: /srv/gw\n"
            "ingest:\n"
            "  listen: ['0.0.0.0:6000', '[::1]:6001']\n"
            "  max_line_bytes: 256\n"
            "  max_connections: 1\n"
            "  idle_timeout_s: 2.5\n"
            "ledger:\n"
            "  fsync: always\n"
            "  segment_bytes: 65536\n"
            "log:\n"
            "  level: debug\n",
        )
    )
    assert config.state_dir == Path("/srv/gw")
    assert config.ingest.listen == ("0.0.0.0:6000", "[::1]:6001")
    assert config.ingest.max_line_bytes == 256
    assert config.ingest.max_connections == 1
    assert config.ingest.idle_timeout_s == 2.5
    assert config.ledger.fsync == "always"
    assert config.ledger.segment_bytes == 65536
    assert config.log.level == "debug"


def test_range_limits_are_inclusive(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "ingest:\n  max_line_bytes: 8388608\n  max_connections: 100000\n"
            "  idle_timeout_s: 86400\n"
            "ledger:\n  segment_bytes: 1073741824\n",
        )
    )
    assert config.ingest.max_line_bytes == 8 * 1024 * 1024
    assert config.ingest.max_connections == 100_000
    assert config.ingest.idle_timeout_s == 86400
    assert config.ledger.segment_bytes == 1024 * 1024 * 1024
    config = load_config(write(tmp_path, "ingest:\n  idle_timeout_s: 1\n"))
    assert config.ingest.idle_timeout_s == 1


def test_every_fsync_choice_accepted(tmp_path):
    for choice in ["batch", "always", '"off"', "'off'"]:
        config = load_config(write(tmp_path, f"ledger:\n  fsync: {choice}\n"))
        assert config.ledger.fsync == choice.strip("'\""), choice


def test_fsync_off_written_unquoted_is_accepted(tmp_path):
    # The documented value `off`, written as in the README (YAML 1.1 reads a bare off as false).
    config = load_config(write(tmp_path, "ledger:\n  fsync: off\n"))
    assert config.ledger.fsync == "off"


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ingest.max_line_bytes = 1  # type: ignore[misc]


# ---- unknown keys


def test_unknown_top_level_key_refused_with_file_and_key(tmp_path):
    exc = refused(tmp_path, "state_dir: ./var\nlisten: 127.0.0.1:50001\n")
    assert exc.key == "listen"
    assert "unknown key" in exc.reason


def test_unknown_nested_keys_refused_with_dotted_key(tmp_path):
    cases = {
        "ingest:\n  max_line_byte: 100\n": "ingest.max_line_byte",
        "ledger:\n  fsynk: batch\n": "ledger.fsynk",
        "log:\n  level: info\n  colour: true\n": "log.colour",
        "ingest:\n  listen: ['127.0.0.1:1']\n  source: x\n": "ingest.source",
    }
    for text, key in cases.items():
        exc = refused(tmp_path, text)
        assert exc.key == key, text
        assert key in str(exc)
        assert "unknown key" in exc.reason


def test_internal_source_field_is_not_a_key(tmp_path):
    assert refused(tmp_path, "source: somewhere\n").key == "source"


def test_non_string_key_refused(tmp_path):
    exc = refused(tmp_path, "1: x\n")
    assert exc.key == "1"


def test_mixed_type_unknown_keys_refused_not_crashing(tmp_path):
    for text in ["1: x\nfoo: y\n", "ingest:\n  1: x\n  foo: y\n", "null: 1\nbar: 2\n"]:
        exc = refused(tmp_path, text)
        assert "unknown key" in exc.reason or "keys must be strings" in exc.reason, text


# ---- bad values


BAD_VALUES = [
    ("ingest:\n  max_line_bytes: '65536'\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: 255\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: 8388609\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: true\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: 1000.5\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: 1024.0\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: null\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_line_bytes: [1]\n", "ingest.max_line_bytes"),
    ("ingest:\n  max_connections: 0\n", "ingest.max_connections"),
    ("ingest:\n  max_connections: 100001\n", "ingest.max_connections"),
    ("ingest:\n  max_connections: false\n", "ingest.max_connections"),
    ("ingest:\n  idle_timeout_s: 0.5\n", "ingest.idle_timeout_s"),
    ("ingest:\n  idle_timeout_s: 86401\n", "ingest.idle_timeout_s"),
    ("ingest:\n  idle_timeout_s: true\n", "ingest.idle_timeout_s"),
    ("ingest:\n  idle_timeout_s: 5m\n", "ingest.idle_timeout_s"),
    ("ingest:\n  idle_timeout_s: .inf\n", "ingest.idle_timeout_s"),
    ("ingest:\n  idle_timeout_s: -.inf\n", "ingest.idle_timeout_s"),
    ("ingest:\n  listen: []\n", "ingest.listen"),
    ("ingest:\n  listen: 50001\n", "ingest.listen"),
    ("ingest:\n  listen: [50001]\n", "ingest.listen[0]"),
    ("ingest: 5\n", "ingest"),
    ("ingest: [a]\n", "ingest"),
    ("ledger:\n  fsync: sometimes\n", "ledger.fsync"),
    ("ledger:\n  fsync: Batch\n", "ledger.fsync"),
    ("ledger:\n  fsync: 1\n", "ledger.fsync"),
    ("ledger:\n  fsync: true\n", "ledger.fsync"),
    ("ledger:\n  segment_bytes: 65535\n", "ledger.segment_bytes"),
    ("ledger:\n  segment_bytes: 1073741825\n", "ledger.segment_bytes"),
    ("ledger:\n  segment_bytes: 64MiB\n", "ledger.segment_bytes"),
    ("log:\n  level: verbose\n", "log.level"),
    ("log:\n  level: INFO\n", "log.level"),
    ("state_dir: 5\n", "state_dir"),
    ("state_dir: ''\n", "state_dir"),
    ("state_dir: null\n", "state_dir"),
    ("state_dir: [a]\n", "state_dir"),
]


def test_bad_values_refused_with_file_and_dotted_key(tmp_path):
    for text, key in BAD_VALUES:
        exc = refused(tmp_path, text)
        assert exc.key == key, (text, exc)
        assert key in str(exc)


def test_nan_idle_timeout_refused(tmp_path):
    # NaN compares false with both bounds; it would disable the idle timeout.
    exc = refused(tmp_path, "ingest:\n  idle_timeout_s: .nan\n")
    assert exc.key == "ingest.idle_timeout_s"


BAD_ADDRESSES = [
    "127.0.0.1",
    "127.0.0.1:",
    ":50001",
    "127.0.0.1:http",
    "127.0.0.1:-1",
    "127.0.0.1:65536",
    "127.0.0.1:50001:1",
    "256.0.0.1:50001",
    "1.2.3:50001",
    "example.com:50001",
    "[::1]",
    "[::g]:50001",
    "[127.0.0.1:50001",
    "",
]


def test_bad_listen_addresses_refused(tmp_path):
    for address in BAD_ADDRESSES:
        exc = refused(tmp_path, f"ingest:\n  listen: ['127.0.0.1:1', '{address}']\n")
        assert exc.key == "ingest.listen[1]", (address, exc)


def test_good_listen_addresses_accepted(tmp_path):
    for address in [
        "[::1]:50001",
        "[::]:50001",
        "0.0.0.0:50001",
        "127.0.0.1:0",
        "127.0.0.1:65535",
        "localhost:50001",
        "[fe80::1]:6000",
    ]:
        config = load_config(write(tmp_path, f"ingest:\n  listen: ['{address}']\n"))
        assert config.ingest.listen == (address,)


def test_single_listen_string_becomes_a_list(tmp_path):
    config = load_config(write(tmp_path, "ingest:\n  listen: '[::1]:50001'\n"))
    assert config.ingest.listen == ("[::1]:50001",)


# ---- unreadable or not YAML


def test_invalid_yaml_refused(tmp_path):
    for text in ["ingest: [unclosed\n", "a: b: c\n", "ingest:\n\tlisten: x\n", "key: 'open\n"]:
        exc = refused(tmp_path, text)
        assert "not valid YAML" in exc.reason, text


def test_yaml_errors_keep_file_line_and_column(tmp_path):
    exc = refused(tmp_path, "ingest:\n  listen: ['127.0.0.1:1'\nname: x\n")
    assert exc.file.endswith(".yaml") and re.fullmatch(r"line \d+, column \d+", exc.key), exc
    assert "<unicode string>" not in str(exc)
    exc = refused(tmp_path, "a: b: c\n")
    assert exc.key == "line 1, column 5", exc


def test_timezone_is_an_iana_name_defaulting_to_the_boxs(tmp_path):
    assert load_config(write(tmp_path, "timezone: Europe/Berlin\n")).zone_name == "Europe/Berlin"
    assert refused(tmp_path, "timezone: Mars/Olympus\n").key == "timezone"
    from gateway import zone

    assert load_config(write(tmp_path, "name: x\n")).zone_name == zone.system_name()
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Sao_Paulo")
    assert zone.system_name(link, tmp_path / "none") == "America/Sao_Paulo"
    (tmp_path / "timezone").write_text("Asia/Tokyo\n")
    assert zone.system_name(tmp_path / "none", tmp_path / "timezone") == "Asia/Tokyo"
    assert zone.system_name(tmp_path / "none", tmp_path / "none") == "UTC"


def test_check_config_validates_without_starting(tmp_path, capsys):
    from gateway.cli import main

    good = write(tmp_path, f"state_dir: {tmp_path / 'state'}\ntimezone: Asia/Tokyo\n")
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {good}") and "timezone    Asia/Tokyo" in out
    assert "printers    none: nothing will be printed" in out
    assert not (tmp_path / "state").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  listen: [x\n", encoding="utf-8")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "line " in err and "column " in err
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2


def test_top_level_must_be_a_mapping(tmp_path):
    for text in ["- a\n- b\n", "just text\n", "42\n"]:
        exc = refused(tmp_path, text)
        assert "mapping" in exc.reason, text


def test_missing_file_refused(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert "cannot read" in info.value.reason


def test_non_utf8_file_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"log:\n  level: info # caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)


# ---- state directory


def test_state_directory_env_is_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gateway")
    assert load_config().state_dir == Path("/var/lib/gateway")
    assert load_config(write(tmp_path, "log:\n  level: info\n")).state_dir == Path(
        "/var/lib/gateway"
    )


def test_state_directory_env_uses_its_first_entry(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gateway:/var/lib/other")
    assert load_config().state_dir == Path("/var/lib/gateway")


def test_empty_state_directory_env_means_dot_var(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "")
    assert load_config().state_dir == Path("./var")


def test_state_dir_in_file_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gateway")
    config = load_config(write(tmp_path, "state_dir: /srv/ledger\n"))
    assert config.state_dir == Path("/srv/ledger")
    assert config.ledger_dir == Path("/srv/ledger/ledger")


def test_state_dir_argument_wins_over_file_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gateway")
    path = write(tmp_path, "state_dir: /srv/ledger\n")
    assert load_config(path, tmp_path / "s").state_dir == tmp_path / "s"
    assert load_config(None, tmp_path / "t").state_dir == tmp_path / "t"


# ---- digest


def test_digest_is_stable(tmp_path):
    text = "ingest:\n  max_line_bytes: 4096\nledger:\n  fsync: always\n"
    a = load_config(write(tmp_path, text, "a.yaml"))
    b = load_config(write(tmp_path, text, "b.yaml"))  # another path, same content
    assert a.digest() == a.digest() == b.digest()
    assert len(a.digest()) == 64 and int(a.digest(), 16) >= 0
    # writing the defaults out explicitly is the same configuration
    explicit = write(
        tmp_path,
        "state_dir: ./var\n"
        "ingest:\n  listen: ['127.0.0.1:50001']\n  max_line_bytes: 65536\n"
        "  max_connections: 512\n  idle_timeout_s: 300\n"
        "ledger:\n  fsync: batch\n  segment_bytes: 67108864\n"
        "log:\n  level: info\n",
        "explicit.yaml",
    )
    empty = load_config(write(tmp_path, "", "empty.yaml"))
    assert load_config(explicit).digest() == empty.digest()
    # without a file, the embedded defaults add a file printer, a route and the
    # daily report; a file states everything itself
    defaults = load_config()
    assert defaults.digest() != empty.digest()
    assert not empty.printers and not empty.routes and empty.reports.daily is None
    assert defaults.routes[0].printer == ("paper",)
    assert defaults.printers["paper"].uri == f"file:{defaults.state_dir / 'printed'}"
    assert defaults.reports.daily is not None and defaults.reports.daily.printer == "paper"


def test_digest_changes_with_every_value(tmp_path):
    base = load_config().digest()
    variants = [
        "state_dir: /elsewhere\n",
        "ingest:\n  listen: ['0.0.0.0:50001']\n",
        "ingest:\n  listen: ['127.0.0.1:50001', '127.0.0.1:50002']\n",
        "ingest:\n  max_line_bytes: 65537\n",
        "ingest:\n  max_connections: 511\n",
        "ingest:\n  idle_timeout_s: 300.5\n",
        "ledger:\n  fsync: always\n",
        "ledger:\n  segment_bytes: 67108865\n",
        "log:\n  level: debug\n",
    ]
    digests = {base}
    for i, text in enumerate(variants):
        digest = load_config(write(tmp_path, text, f"v{i}.yaml")).digest()
        assert digest != base, text
        digests.add(digest)
    assert len(digests) == len(variants) + 1
    assert load_config(None, Path("/other")).digest() != base
