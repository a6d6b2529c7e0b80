"""Anchors from paper and the verification statement: `verify --expect` and `--statement`."""

from __future__ import annotations

import json

import pytest
from test_audit_cli import build, tamper

from gateway.cli import main as cli_main
from gateway.ledger.store import LedgerReader
from gateway.ledger.verify import parse_anchor, parse_anchor_file


@pytest.fixture
def state(tmp_path):
    build(tmp_path / "state", n=20, segment_bytes=2048)  # several segments
    return tmp_path / "state"


def hash_at(state, seq: int) -> str:
    for _s, _p, digest in LedgerReader(state / "ledger").entries(seq, seq):
        return digest.hex()
    raise AssertionError(seq)


def cli(capsys, *args):
    code = cli_main(list(args))
    return code, capsys.readouterr().out


def test_a_right_anchor_passes_and_a_wrong_one_is_named(state, capsys):
    right = f"7:{hash_at(state, 7)}"
    short = f"12:{hash_at(state, 12)[:16]}"  # as printed on paper
    code, out = cli(capsys, "verify", "--expect", right, "--expect", short, "--state", str(state))
    assert code == 0, out
    assert f"anchor {right}: on the chain" in out and "anchor 12:" in out
    wrong = f"9:{hash_at(state, 10)[:16]}"
    code, out = cli(capsys, "verify", "--expect", right, "--expect", wrong, "--state", str(state))
    assert code == 1
    assert f"ANCHOR MISSED: {wrong}: the chain has another hash there" in out
    assert f"anchor {right}: on the chain" in out
    code, out = cli(capsys, "verify", "--expect", f"999:{'ab' * 8}", "--state", str(state))
    assert code == 1 and "ANCHOR MISSED: 999:" in out and "not in the ledger" in out


def test_anchors_from_a_file_as_typed_from_paper(state, tmp_path, capsys):
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(
        f"# from the receipts of December\nseq 3  hash {hash_at(state, 3)[:16]}\n\n"
        f"15 {hash_at(state, 15)[:20].upper()}\n",
        encoding="utf-8",
    )
    code, out = cli(capsys, "verify", "--expect-file", str(anchors), "--json", "--state",
                    str(state))  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["ok"] and [a["ok"] for a in data["anchors"]] == [True, True]
    with pytest.raises(ValueError, match="line 2"):
        parse_anchor_file("1:" + "a" * 16 + "\n2:abc\n")
    with pytest.raises(ValueError, match="16 to 64 hex digits"):
        parse_anchor("5:abcdef")
    assert parse_anchor("seq 5  hash ABCDEF0123456789").hash_hex == "abcdef0123456789"
    assert cli_main(["verify", "--expect", "nonsense", "--state", str(state)]) == 2


def test_a_damaged_chain_checks_no_anchor(state, capsys):
    tamper(state, 9)
    code, out = cli(capsys, "verify", "--expect", f"3:{hash_at(state, 3)}", "--state", str(state))
    assert code == 1 and "DAMAGED" in out and "anchors not checked" in out


@pytest.mark.parametrize("suffix", [".txt", ".html"])
def test_the_statement_says_what_was_checked(state, tmp_path, capsys, suffix):
    out_file = tmp_path / f"statement{suffix}"
    anchor = f"5:{hash_at(state, 5)[:16]}"
    code, out = cli(capsys, "verify", "--expect", anchor, "--statement", str(out_file),
                    "--state", str(state))  # fmt: skip
    assert code == 0 and f"statement written to {out_file}" in out
    text = out_file.read_text(encoding="utf-8")
    head = LedgerReader(state / "ledger").head()
    for expected in (
        f"seq 1 hash {hash_at(state, 1)}",  # the ledger's identity
        f"seq {head.seq} hash {head.hash.hex()}",
        "seq 1 to 21: 21 entries",
        "INTACT",
        f"{anchor}: on the chain",
        "Europe/Berlin",  # the gateway's zone, from the ledger
        "--statement",  # the command line
        "What it does not",
        "not signed",
    ):
        assert expected in text, expected
    if suffix == ".html":
        assert text.startswith("<!DOCTYPE html>") and "@page" in text and "174mm" in text


def test_a_statement_of_a_damaged_ledger_says_so(state, tmp_path, capsys):
    tamper(state, 9)
    out_file = tmp_path / "statement.txt"
    code, _ = cli(capsys, "verify", "--statement", str(out_file), "--state", str(state))
    text = out_file.read_text(encoding="utf-8")
    assert code == 1 and "DAMAGED: first bad seq 9" in text and "INTACT" not in text


def test_the_html_statement_escapes_what_it_quotes():
    from gateway.audit import statement

    s = statement.Statement(
        gateway="<script>alert(1)</script>", version="1", state_dir="/s", identity="seq 1",
        checked="seq 1 to 1", head="seq 1", verdict="INTACT", anchors=["1:&"], at="now",
        command="gateway verify --statement 'a<b>.html'",
    )  # fmt: skip
    page = statement.as_html(s)
    assert "<script>" not in page and "&lt;script&gt;" in page and "1:&amp;" in page
