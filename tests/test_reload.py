"""SIGHUP: the configuration file applied again without dropping connections or jobs."""

from __future__ import annotations

import json
import signal
import socket

from gatewayproc import AckClient, GatewayProcess, event_line, wait_for
from inproc import ledger, pump, settle

from gateway.config import load_config
from gateway.service import Gateway


def system(gw: Gateway, name: str) -> list[dict]:
    """System entries of that name, once everything appended so far is durable."""
    settle(gw)
    return [e for e in ledger(gw) if e["kind"] == "system" and e["name"] == name]


BASE = """
state_dir: {state}
ingest: {{listen: ["127.0.0.1:0"], idle_timeout_s: 300}}
"""


def start(tmp_path, extra: str = "") -> tuple[Gateway, tuple[str, int], object]:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE.format(state=tmp_path / "state") + extra)
    gw = Gateway(load_config(path))
    return gw, gw.start()[0], path


def stop(gw: Gateway) -> None:
    gw.request_stop()
    gw._finish()


def test_a_bad_file_is_refused_and_the_running_configuration_stays(tmp_path):
    gw, _address, path = start(tmp_path)
    before = gw.config
    path.write_text(path.read_text() + "ingest_typo: 1\n")
    gw.reload()
    assert gw.config is before
    (refused,) = system(gw, "reload_refused")
    assert "ingest_typo" in refused["detail"]["reason"]
    stop(gw)


def test_adding_a_printer_prints_new_events_and_keeps_connections(tmp_path):
    gw, address, path = start(tmp_path)
    out = tmp_path / "printed"
    with socket.create_connection(address) as client:
        client.sendall(b'{"hello":{"app":"a","ack":true}}\n' + event_line(n=1))
        pump(gw, lambda: gw.ingest.stats.events == 1 and gw.ledger.durable.seq >= 2)
        text = path.read_text().replace("idle_timeout_s: 300", "idle_timeout_s: 60")
        path.write_text(
            text + f"printers: {{p: {{uri: 'file:{out}'}}}}\nroutes: [{{printer: p}}]\n"
        )
        gw.reload()
        assert gw.spool is not None and gw.ingest.config.idle_timeout_s == 60
        client.sendall(event_line(n=2))  # the same connection, after the reload
        pump(gw, lambda: gw.ingest.stats.events == 2)
        pump(gw, lambda: any(e["kind"] == "print" for e in ledger(gw)))
        replies = b""
        client.settimeout(5)
        while replies.count(b"\n") < 3:
            replies += client.recv(4096)
    lines = [json.loads(line) for line in replies.splitlines()]
    assert [r.get("ok") for r in lines[1:]] == [True, True]
    files = list(out.iterdir())
    assert len(files) == 1 and '"n": 2' not in files[0].read_text()  # only the new event
    (reloaded,) = system(gw, "reloaded")
    assert reloaded["detail"]["printing"] is True
    assert reloaded["detail"]["config_hash"] == load_config(path).digest()
    stop(gw)


def test_removing_a_printer_cancels_its_queue_on_the_record(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    printers = (
        f"printers: {{p: {{uri: 'file:{blocker}'}}, q: {{uri: 'file:{tmp_path / 'q'}'}}}}\n"
        "routes: [{printer: p}]\nspool: {retry_start_s: 5, retry_cap_s: 5}\n"
    )
    gw, address, path = start(tmp_path, printers)
    with socket.create_connection(address) as c:
        c.sendall(event_line(n=1) + event_line(n=2))
    pump(gw, lambda: len(gw.spool.printers["p"].queue) == 2)
    path.write_text(
        BASE.format(state=tmp_path / "state")
        + f"printers: {{q: {{uri: 'file:{tmp_path / 'q'}'}}}}\nroutes: [{{printer: q}}]\n"
    )
    gw.reload()
    assert set(gw.spool.printers) == {"q"}
    settle(gw)
    cancelled = [e for e in ledger(gw) if e["kind"] == "print"]
    assert [(c["printer"], c["outcome"]) for c in cancelled] == [("p", "cancelled")] * 2
    stop(gw)


def test_listen_changes_wait_for_a_restart(tmp_path):
    gw, address, path = start(tmp_path)
    path.write_text(path.read_text().replace('"127.0.0.1:0"', '"127.0.0.1:1"'))
    gw.reload()
    assert gw.config.ingest.listen == ("127.0.0.1:0",)
    (reloaded,) = system(gw, "reloaded")
    assert reloaded["detail"]["restart_needed"] == ["ingest.listen"]
    with socket.create_connection(address):
        pass  # still listening where it was
    stop(gw)


def test_sighup_reloads_a_running_process(tmp_path):
    gw = GatewayProcess(tmp_path)
    try:
        with AckClient(gw.port, app="before") as c:
            gw.config["printers"] = {"p": {"uri": f"file:{tmp_path / 'printed'}"}}
            gw.config["routes"] = [{"printer": "p"}]
            import yaml

            gw.config_path.write_text(yaml.safe_dump(gw.config))
            gw.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda: any(e.get("name") == "reloaded" for e in gw.export()), 10.0, "reloaded"
            )
            c.send_lines([event_line(n=7)])
            assert c.read_replies(1, 10.0)[0]["ok"] is True  # same connection
        wait_for(lambda: len(list((tmp_path / "printed").glob("*"))) == 1, 10.0, "a receipt")
    finally:
        gw.close()


def test_every_front_end_listen_change_waits_for_a_restart(tmp_path):
    """HTTP and syslog listeners are bound at start like TCP's: a reload that
    changes their addresses keeps them as bound and says a restart is needed."""
    gw, _address, path = start(tmp_path)
    path.write_text(
        path.read_text().replace(
            "idle_timeout_s: 300}",
            'idle_timeout_s: 300, http: {listen: ["127.0.0.1:0"]}, '
            'syslog: {listen: ["127.0.0.1:0"]}}',
        )
    )
    gw.reload()
    assert gw.config.ingest.http.listen == () and gw.config.ingest.syslog.listen == ()
    (reloaded,) = system(gw, "reloaded")
    assert reloaded["detail"]["restart_needed"] == ["ingest.http.listen", "ingest.syslog.listen"]
    stop(gw)
