"""Printing end to end: a real `gateway run` process, the printer emulator, the CLI."""

from __future__ import annotations

import json
import re

from gatewayproc import GatewayProcess, event_line, run_gateway_command, wait_for

from gateway.printing.emulator import Emulator, Fault

RECEIPTS = 6


def printer_config(port: int) -> dict:
    return {
        "printers": {"counter": {"uri": f"socket://127.0.0.1:{port}?contimeout=2",
                                 "language": "escpos"}},
        "routes": [{"printer": "counter"}],
        "spool": {"retry_start_s": 0.1, "retry_cap_s": 0.5},
    }  # fmt: skip


def status(gw: GatewayProcess) -> dict:
    done = run_gateway_command("status", "--json", "--config", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def send_events(gw: GatewayProcess, n: int) -> None:
    data = b"".join(event_line(n=i) for i in range(n))
    done = run_gateway_command("send", "--ack", "--port", str(gw.port), "--app", "till", input=data)
    assert done.returncode == 0, done.stderr


def seqs_on_paper(jobs: list[bytes]) -> list[tuple[int, bool]]:
    out = []
    for job in jobs:
        m = re.search(rb"seq (\d+)  hash", job)
        assert m, job
        out.append((int(m.group(1)), b"REPRINT - delivery uncertain" in job))
    return out


def test_kill_9_with_receipts_queued_then_restart_prints_every_one(tmp_path):
    with Emulator(tmp_path / "paper", fault=Fault("refuse")) as emu:
        gw = GatewayProcess(tmp_path, **printer_config(emu.port))
        try:
            send_events(gw, RECEIPTS)
            wait_for(
                lambda: (
                    status(gw)["printers"][0]["queued"] == RECEIPTS
                    and status(gw)["printers"][0]["state"] == "error"
                ),
                10.0,
                "receipts queued behind a refusing printer",
            )
            gw.kill()
            emu.set_fault(Fault())
            gw.restart()
            jobs = emu.wait_jobs(RECEIPTS, 20.0)
            wait_for(lambda: status(gw)["printers"][0]["queued"] == 0, 10.0, "an empty queue")
            entries = gw.export()
        finally:
            gw.close()
    events = [e["seq"] for e in entries if e["kind"] == "event"]
    paper = seqs_on_paper(jobs)
    assert [seq for seq, _ in paper] == events  # each once, in order, none lost
    # After a crash the job at the head of the queue may have been on its way:
    # its copy says so. Nothing else is marked.
    assert [marked for _, marked in paper] == [True] + [False] * (RECEIPTS - 1)
    printed = [e for e in entries if e["kind"] == "print"]
    assert sorted(p["seqs"][0] for p in printed) == events
    assert all(p["outcome"] == "printed" for p in printed)
    code, result = gw.verify()
    assert code == 0 and result["ok"], result


def test_cli_reprint_status_page_and_report(tmp_path):
    with Emulator(tmp_path / "paper") as emu:
        gw = GatewayProcess(tmp_path, **printer_config(emu.port))
        try:
            send_events(gw, 2)
            emu.wait_jobs(2, 10.0)
            config = ["--config", str(gw.config_path)]
            done = run_gateway_command("reprint", *config)
            assert done.returncode == 0 and "COPY 1" in done.stdout.decode(), done
            done = run_gateway_command("print-status-page", *config)
            assert done.returncode == 0, done
            today = gw.export()[-1]["received_at"][:10]
            done = run_gateway_command("report", "--date", today, "--printer", "counter", *config)
            assert done.returncode == 0 and "report no. 1" in done.stdout.decode(), done
            jobs = emu.wait_jobs(5, 10.0)
            preview = tmp_path / "preview.txt"
            done = run_gateway_command("report", "--date", today, "--out", str(preview), *config)
            assert done.returncode == 0, done
            bad = run_gateway_command("reprint", "--seq", "999999", *config)
            assert bad.returncode == 1 and b"not a durable entry" in bad.stderr
        finally:
            gw.close()
    assert b"*** COPY 1 ***" in jobs[2]
    assert b"status" in jobs[3] and b"counter: ready" in jobs[3]
    assert b"report no. 1" in jobs[4]
    assert "PREVIEW - not a numbered report" in preview.read_text()


def test_status_without_a_running_gateway_says_so(tmp_path):
    (tmp_path / "state").mkdir()
    done = run_gateway_command("status", "--state", str(tmp_path / "state"))
    assert done.returncode == 2 and b"no running gateway" in done.stderr


def test_press_button_on_the_fake_board(tmp_path):
    out = tmp_path / "printed"
    gw = GatewayProcess(
        tmp_path,
        printers={"paper": {"uri": f"file:{out}"}},
        routes=[{"printer": "paper"}],
        board={"fake": True},
    )
    try:
        send_events(gw, 1)
        wait_for(lambda: len(list(out.glob("*.txt"))) == 1, 10.0, "the receipt")
        for hold in ("0.2", "3"):
            done = run_gateway_command(
                "press-button", "--hold", hold, "--config", str(gw.config_path)
            )
            assert done.returncode == 0, done.stderr
        wait_for(lambda: len(list(out.glob("*.txt"))) == 3, 10.0, "a reprint and a status page")
        buttons = [e for e in gw.export() if e["kind"] == "button"]
    finally:
        gw.close()
    assert [b["action"] for b in buttons] == ["reprint", "status_page"]
