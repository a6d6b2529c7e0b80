"""End to end: the real `gateway run` process, real sockets, real ledger files.

Each test starts its own gateway (tests/gatewayproc.py) on a free loopback
port with a temporary state directory. Every wait polls against a deadline.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import threading
import time
import uuid

import pytest
from blake3 import blake3
from gatewayproc import (
    AckClient,
    Streamer,
    assert_verify_ok,
    by_seq,
    check_streamed,
    event,
    event_line,
    free_port,
    rss_kib,
    run_gateway_command,
    wait_for,
)

import gateway as gateway_pkg
from gateway.ledger.format import frame_header

# ---------------------------------------------------------------- helpers


def events_with(entries: list[dict], key: str, value: object) -> list[dict]:
    return [
        e
        for e in entries
        if e["kind"] == "event"
        and isinstance(e.get("event"), dict)
        and e["event"].get(key) == value
    ]


def system_entries(entries: list[dict], name: str) -> list[dict]:
    return [e for e in entries if e["kind"] == "system" and e.get("name") == name]


def recv_until_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything the peer sends until it closes (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF within {timeout:g} s; received {bytes(data)[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(data)
        data += chunk


# ---------------------------------------------------------------- 1, 2: fire and forget


def test_fire_and_forget_gets_no_bytes_and_events_are_stored(gateway):
    marker = uuid.uuid4().hex
    lines = [event_line(marker=marker, n=n) for n in range(3)]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"".join(lines))
        sock.shutdown(socket.SHUT_WR)
        # The gateway closes its side after our EOF without ever writing a byte.
        assert recv_until_eof(sock, 10.0) == b""

    entries = gateway.wait_export(
        lambda es: len(events_with(es, "marker", marker)) == 3, what="the 3 events"
    )
    stored = events_with(entries, "marker", marker)
    assert [e["event"] for e in stored] == [event(marker=marker, n=n) for n in range(3)]
    assert all(e["flags"] == [] for e in stored)
    assert all(e["source"]["app"] is None for e in stored)
    assert [e["seq"] for e in stored] == sorted(e["seq"] for e in stored)


def test_last_line_without_newline_is_stored(gateway):
    marker = uuid.uuid4().hex
    # The seed client: one line, no trailing newline, close at once.
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(event_line(marker=marker, n=0).rstrip(b"\n"))
    sock.close()
    # printf style: two lines, then a last one without a newline.
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        event_line(marker=marker, n=1)
        + event_line(marker=marker, n=2)
        + event_line(marker=marker, n=3).rstrip(b"\n")
    )
    sock.close()

    entries = gateway.wait_export(
        lambda es: len(events_with(es, "marker", marker)) == 4, what="the 4 events"
    )
    stored = sorted(events_with(entries, "marker", marker), key=lambda e: e["event"]["n"])
    assert [e["event"] for e in stored] == [event(marker=marker, n=n) for n in range(4)]
    assert all(e["flags"] == [] for e in stored)
    assert not [e for e in entries if e["kind"] == "rejected"]


# ---------------------------------------------------------------- 3: concurrent acks


def test_concurrent_acknowledged_clients(gateway):
    clients, per_client = 8, 500
    results: dict[int, list[dict]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with AckClient(gateway.port, app=f"app{i}", timeout=30.0) as c:
                assert c.hello["hello"]["ack"] is True, c.hello
                c.send_lines([event_line(client=i, n=n) for n in range(per_client)])
                results[i] = c.read_replies(per_client, timeout=30.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45.0)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    assert not errors, errors

    all_seqs: list[int] = []
    for i in range(clients):
        replies = results[i]
        assert len(replies) == per_client
        assert all(r.get("ok") is True and set(r) == {"ok", "seq"} for r in replies), replies[:3]
        seqs = [r["seq"] for r in replies]
        assert all(a < b for a, b in itertools.pairwise(seqs)), f"client {i} out of order"
        all_seqs += seqs
    assert len(set(all_seqs)) == clients * per_client, "a seq was acknowledged twice"

    index = by_seq(gateway.export())
    for i in range(clients):
        for n, reply in enumerate(results[i]):
            entry = index.get(reply["seq"])
            assert entry is not None, f"acknowledged seq {reply['seq']} missing from export"
            assert entry["kind"] == "event"
            assert entry["event"] == event(client=i, n=n)
            assert entry["source"]["app"] == f"app{i}"
    result = assert_verify_ok(gateway)
    assert result["head"]["seq"] >= max(all_seqs)


# ---------------------------------------------------------------- 4: refused and flagged lines


def test_ack_replies_for_good_bad_and_flagged_lines(gateway):
    marker = uuid.uuid4().hex
    good = event_line(marker=marker, n=0).rstrip(b"\n")
    bad_json = b'{"event_type": "x", "timestamp": '
    array = b"[1, 2, 3]"
    flagged = json.dumps({"event_type": "no_time", "marker": marker}).encode()
    with AckClient(gateway.port, app="mixer") as c:
        conn = c.hello["hello"]["conn"]
        c.send_lines([good, bad_json, array, flagged])
        replies = c.read_replies(4, timeout=10.0)

    assert replies[0]["ok"] is True
    assert replies[1]["ok"] is False and replies[1]["error"] == "bad_json", replies[1]
    assert replies[2]["ok"] is False and replies[2]["error"] == "not_object", replies[2]
    assert replies[3]["ok"] is True
    first, last = replies[0]["seq"], replies[3]["seq"]
    assert first < last

    index = by_seq(gateway.export())
    assert index[first]["event"] == json.loads(good)
    assert index[first]["flags"] == []
    assert index[last]["event"] == json.loads(flagged)
    assert index[last]["flags"] == ["missing_timestamp"]
    assert index[last]["source"] == index[first]["source"]
    assert index[first]["source"]["app"] == "mixer" and index[first]["source"]["conn"] == conn

    rejected = [e for s, e in sorted(index.items()) if e["kind"] == "rejected" and first < s < last]
    assert [e["reason"] for e in rejected] == ["bad_json", "not_object"]
    for entry, line in zip(rejected, [bad_json, array], strict=True):
        assert entry["length"] == len(line)
        assert entry["digest"] == blake3(line).hexdigest()
        assert entry["excerpt"] == line.decode()
        assert entry["source"]["conn"] == conn
    assert_verify_ok(gateway)


# ---------------------------------------------------------------- 5: max_connections


@pytest.mark.parametrize(
    "gateway", [{"ingest": {"max_connections": 3}}], indirect=True, ids=["max3"]
)
def test_max_connections_refuses_then_accepts_again(gateway):
    clients = [AckClient(gateway.port, app=f"c{i}") for i in range(3)]
    try:
        for c in clients:
            assert "hello" in c.hello, c.hello

        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as extra:
            data = recv_until_eof(extra, 10.0)
        lines = data.splitlines()
        assert len(lines) == 1, data
        reply = json.loads(lines[0])
        assert reply["ok"] is False and reply["error"] == "too_many_connections", reply

        clients.pop(0).close()

        def accepted() -> bool:
            c = AckClient(gateway.port, app="late")
            if "hello" in c.hello:
                clients.append(c)
                return True
            assert c.hello.get("error") == "too_many_connections", c.hello
            c.close()
            return False

        wait_for(accepted, 10.0, "a connection to be accepted after one closed")
        late = clients[-1]
        late.send_lines([event_line(n=1)])
        assert late.read_replies(1, 10.0)[0]["ok"] is True
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- 6: overlong line


@pytest.mark.parametrize(
    "gateway", [{"ingest": {"max_line_bytes": 1024}}], indirect=True, ids=["max1024"]
)
def test_overlong_line_is_refused_and_recorded(gateway):
    long_line = b'{"x":"' + b"a" * (5000 - 8) + b'"}'
    assert len(long_line) == 5000
    with AckClient(gateway.port, app="long") as c:
        assert c.hello["hello"]["max_line_bytes"] == 1024
        c.send_raw(long_line + b"\n" + event_line(n=7))
        replies = c.read_replies(2, timeout=10.0)
    assert replies[0]["ok"] is False and replies[0]["error"] == "line_too_long", replies[0]
    assert replies[1]["ok"] is True, replies[1]

    entries = gateway.export()
    rejected = [e for e in entries if e["kind"] == "rejected"]
    assert len(rejected) == 1, rejected
    assert rejected[0]["reason"] == "line_too_long"
    assert rejected[0]["length"] == 5000
    assert rejected[0]["digest"] == blake3(long_line).hexdigest()
    assert rejected[0]["excerpt"] == long_line[:256].decode()
    assert rejected[0]["seq"] < replies[1]["seq"]
    assert by_seq(entries)[replies[1]["seq"]]["event"] == event(n=7)


# ---------------------------------------------------------------- 7: idle timeout


@pytest.mark.parametrize(
    "gateway", [{"ingest": {"idle_timeout_s": 1}}], indirect=True, ids=["idle1"]
)
def test_idle_connections_are_closed(gateway):
    with (
        AckClient(gateway.port, app="idle") as c,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as quiet,
    ):
        start = time.monotonic()
        replies = c.read_until_eof(timeout=10.0)
        elapsed = time.monotonic() - start
        assert len(replies) == 1 and replies[0]["error"] == "idle_timeout", replies
        assert elapsed >= 0.8, f"closed after {elapsed:.2f} s, before the 1 s idle timeout"
        # The fire-and-forget connection is closed too, silently.
        assert recv_until_eof(quiet, 10.0) == b""


# ---------------------------------------------------------------- 8: backpressure


def test_client_not_reading_acks_gets_backpressure(gateway):
    # 400,000 acks are about 10 MB: far more than the reply bound (256 KiB) plus
    # what the kernel buffers on loopback with the flooder's receive buffer kept
    # small, so the flood can only finish if nothing holds the gateway back.
    total = 400_000
    template = b'{"event_type":"flood","timestamp":"2026-11-23T10:00:00Z","n":%d}\n'
    payload = b"".join(template % n for n in range(total))
    flood = AckClient(gateway.port, app="flood", timeout=60.0, rcvbuf=64 * 1024)
    progress = {"sent": 0, "done": False}
    stop = threading.Event()

    def write() -> None:
        view = memoryview(payload)
        try:
            while progress["sent"] < len(payload) and not stop.is_set():
                n = flood.sock.send(view[progress["sent"] : progress["sent"] + 65536])
                progress["sent"] += n
            progress["done"] = progress["sent"] == len(payload)
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    test_deadline = time.monotonic() + 25.0
    peak_kib = 0
    try:
        wait_for(lambda: progress["sent"] >= 1 << 20, 10.0, "the flood to get going")
        rounds = 0
        last_sent = -1
        changed_at = time.monotonic()
        while True:
            # A second client is served promptly while the flood goes on.
            with AckClient(gateway.port, app="polite", timeout=10.0) as polite:
                t0 = time.monotonic()
                polite.send_lines([event_line(round=rounds, n=n) for n in range(50)])
                replies = polite.read_replies(50, timeout=5.0)
                latency = time.monotonic() - t0
            assert all(r["ok"] for r in replies)
            assert latency < 5.0
            peak_kib = max(peak_kib, rss_kib(gateway.pid))
            rounds += 1
            # Stalled: the gateway has read nothing more for a second (a round
            # of the polite client takes ~50 ms, so a few rounds are not enough).
            if progress["sent"] != last_sent:
                last_sent, changed_at = progress["sent"], time.monotonic()
            stalled = time.monotonic() - changed_at >= 1.0
            assert not progress["done"], "the flood was read to the end: no backpressure"
            if rounds >= 3 and stalled:
                break
            assert time.monotonic() < test_deadline, "the flood did not stall"
        peak_kib = max(peak_kib, rss_kib(gateway.pid))
        assert peak_kib < 200 * 1024, f"gateway VmRSS reached {peak_kib} KiB"
    finally:
        stop.set()
        try:
            flood.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        writer.join(10.0)
        flood.close()
    assert not writer.is_alive()
    # Still alive and serving after the flooder is gone.
    with AckClient(gateway.port, app="after") as c:
        c.send_lines([event_line(n=0)])
        assert c.read_replies(1, 10.0)[0]["ok"] is True
    assert rss_kib(gateway.pid) < 200 * 1024


# ---------------------------------------------------------------- 9, 10: stop and crash under load


def test_sigterm_under_load_commits_and_acknowledges(gateway):
    streamers = [Streamer(gateway.port, i) for i in range(4)]
    try:
        wait_for(
            lambda: all(len(s.replies) >= 200 for s in streamers), 20.0, "acks on every client"
        )
        code = gateway.stop(signal.SIGTERM, timeout=15.0)
    finally:
        for s in streamers:
            s.finish()
    assert code == 0, gateway.log_text()

    entries = gateway.export()
    acked = check_streamed(streamers, entries)
    assert len(acked) >= 800
    last = entries[-1]
    assert last["kind"] == "system" and last["name"] == "stopped", last
    assert max(acked) < last["seq"]
    assert_verify_ok(gateway)


def test_sigterm_records_a_line_the_client_is_still_writing_as_incomplete(gateway):
    # docs/protocol.md, "Shutdown and signals": a final line without a newline
    # from a client that has not closed its side is never parsed as an event;
    # it is recorded as refused (incomplete_line), without a reply.
    cut = event_line(n=1)[:30]
    with AckClient(gateway.port, app="midline") as c:
        c.send_raw(event_line(n=0) + cut)
        first = c.read_replies(1, 10.0)[0]
        assert first["ok"] is True, first
        code = gateway.stop(signal.SIGTERM)
        rest = c.read_until_eof(10.0)
    assert code == 0, gateway.log_text()
    assert rest == [], f"replies for a line the client was still writing: {rest}"
    entries = gateway.export()
    rejected = [e for e in entries if e["kind"] == "rejected"]
    assert [r["reason"] for r in rejected] == ["incomplete_line"], rejected
    assert rejected[0]["length"] == len(cut)
    assert [e["event"] for e in entries if e["kind"] == "event"] == [event(n=0)]
    assert entries[-1]["kind"] == "system" and entries[-1]["name"] == "stopped"


def test_sigterm_delivers_the_last_acks_to_a_client_still_writing(gateway):
    # docs/protocol.md, "Shutdown and signals": the gateway commits what it read,
    # then sends the last replies, waiting up to 5 s for the client to read them.
    # The client keeps writing (so the gateway has unread input when it closes)
    # and has a small receive buffer (so the last acks cannot all be in flight).
    s = Streamer(gateway.port, 0, window=None, rcvbuf=16384)
    try:
        wait_for(lambda: len(s.replies) >= 100, 20.0, "the first acks")
        code = gateway.stop(signal.SIGTERM, timeout=15.0)
    finally:
        s.finish()
    assert code == 0, gateway.log_text()
    entries = gateway.export()
    stored = [e["seq"] for e in entries if e["kind"] == "event" and e["source"]["app"] == "stream0"]
    acked = [r["seq"] for r in s.replies if r.get("ok")]
    assert acked == stored[: len(acked)], "acks do not match the stored events in order"
    assert len(acked) == len(stored), (
        f"the gateway committed {len(stored)} events from a client that read its replies "
        f"but delivered acks for only {len(acked)} (last ack seq {acked[-1]}, "
        f"last stored seq {stored[-1]}); sent {s.sent}"
    )


def test_kill_under_load_then_restart(gateway):
    streamers = [Streamer(gateway.port, i) for i in range(4)]
    try:
        wait_for(
            lambda: all(len(s.replies) >= 200 for s in streamers), 20.0, "acks on every client"
        )
        gateway.kill()
    finally:
        for s in streamers:
            s.finish()
    acked = set().union(*(s.acked() for s in streamers))
    assert acked

    # Readable and intact straight after the crash (an incomplete tail is allowed).
    check_streamed(streamers, gateway.export())
    assert_verify_ok(gateway)

    gateway.restart()
    entries = gateway.export()
    check_streamed(streamers, entries)
    assert_verify_ok(gateway)

    started = system_entries(entries, "started")
    assert len(started) == 2, started
    assert started[1]["seq"] > max(acked)
    assert entries[-1]["seq"] == started[1]["seq"], "started is the head after a restart"
    recovered = system_entries(entries, "recovered")
    if recovered:  # only when the kill tore an entry at the tail
        assert len(recovered) == 1 and recovered[0]["seq"] == started[1]["seq"] - 1
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(entries) + 1)), "seqs are not contiguous"

    with AckClient(gateway.port, app="after") as c:
        # The recovered ledger is durable from the start (`started` may still be in flight).
        assert c.hello["hello"]["head_seq"] >= max(acked)
        c.send_lines([event_line(n=42)])
        reply = c.read_replies(1, 10.0)[0]
    assert reply["ok"] is True and reply["seq"] > started[1]["seq"]
    assert by_seq(gateway.export())[reply["seq"]]["event"] == event(n=42)
    assert_verify_ok(gateway)


# ---------------------------------------------------------------- 11-13: commands


def test_second_run_on_same_state_dir_is_refused(gateway):
    result = run_gateway_command("run", "--config", str(gateway.config_path), timeout=15)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert b"already running" in result.stderr, result.stderr
    assert gateway.running
    with AckClient(gateway.port) as c:
        c.send_lines([event_line(n=1)])
        assert c.read_replies(1, 10.0)[0]["ok"] is True


def test_send_command_and_version(gateway, tmp_path):
    good = tmp_path / "good.ndjson"
    good.write_bytes(b"".join(event_line(n=n) for n in range(3)) + b"\n")  # a blank line too
    result = run_gateway_command(
        "send", "--ack", "--app", "cli", "--port", str(gateway.port), str(good), timeout=30
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert b"acknowledged 3" in result.stdout, result.stdout

    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(event_line(n=10) + b"not json\n" + event_line(n=11))
    result = run_gateway_command("send", "--ack", "--port", str(gateway.port), str(bad), timeout=30)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert b"bad_json" in result.stderr, result.stderr

    entries = gateway.export()
    cli_events = [e["event"] for e in entries if e["kind"] == "event"]
    # `send --ack` gives each line an event_id (a UUID, first member) so it can retry safely.
    ids = [e.pop("event_id") for e in cli_events]
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == 5
    assert cli_events == [event(n=n) for n in (0, 1, 2, 10, 11)]
    assert [e["reason"] for e in entries if e["kind"] == "rejected"] == ["bad_json"]

    result = run_gateway_command("--version", timeout=30)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"gateway {gateway_pkg.__version__}"


def test_unknown_config_key_refuses_to_start(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "ingest:\n"
        f"  listen: ['127.0.0.1:{free_port()}']\n"
        "  max_conections: 3\n",
        encoding="utf-8",
    )
    result = run_gateway_command("run", "--config", str(path), timeout=15)
    assert result.returncode == 1, (result.stdout, result.stderr)
    stderr = result.stderr.decode()
    assert str(path) in stderr and "ingest.max_conections" in stderr, stderr
    assert not (tmp_path / "state" / "ledger").exists()


def test_a_torn_tail_is_cut_and_always_recorded_by_a_recovered_entry(gateway):
    """What a power cut leaves after the last acknowledged entry (here half a frame)
    is cut at the next start, and a `recovered` entry names it, just before `started`."""
    with AckClient(gateway.port) as c:
        c.send_lines([event_line(n=n) for n in range(5)])
        acked = [r["seq"] for r in c.read_replies(5)]
    assert gateway.stop() == 0
    segment = sorted((gateway.state_dir / "ledger").glob("*.seg"))[-1]
    size = segment.stat().st_size
    # A frame header (length 100, the next seq) with its CRC, and only part of its payload.
    torn = frame_header(100, max(acked) + 2) + b"\xa1" * 40
    with open(segment, "ab") as f:
        f.write(torn)
    gateway.start()
    entries = gateway.export()
    recovered = system_entries(entries, "recovered")
    started = system_entries(entries, "started")
    assert len(recovered) == 1, recovered
    assert len(started) == 2 and recovered[0]["seq"] == started[1]["seq"] - 1
    detail = recovered[0]["detail"]
    assert detail["segment"] == segment.name
    assert (detail["offset"], detail["discarded_bytes"]) == (size, len(torn))
    assert detail["discarded_blake3"] == blake3(torn).hexdigest()
    assert (gateway.state_dir / "ledger" / detail["quarantine_file"]).read_bytes() == torn
    check = by_seq(entries)
    assert all(check[s]["event"] == event(n=n) for n, s in enumerate(acked))
    assert_verify_ok(gateway)


def test_sigterm_at_any_moment_of_start_up_is_a_clean_stop(tmp_path):
    """Signals are taken from the first instruction: a SIGTERM during start-up
    (imports, recovery, binding) stops the gateway cleanly, exit 0."""
    import subprocess

    import yaml
    from gatewayproc import ROOT, free_port, gateway_command

    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "ingest": {"listen": [f"127.0.0.1:{free_port()}"]},
                "clock": {"check_sync": False},
            }
        )
    )
    # From 0.1 s on, our code runs (before that, the interpreter itself starts).
    for delay in (0.1, 0.2, 0.3, 0.45, 0.7):
        proc = subprocess.Popen(
            gateway_command("run", "--config", str(config)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)  # the moment of the signal, not a wait for anything
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (delay, err.decode()[-2000:])
