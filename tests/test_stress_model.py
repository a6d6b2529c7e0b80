"""A reference-model stress test: random clients, kills, restarts, disk-full periods,
segment deletions and byte flips, each step checked against a model of what was
acknowledged (in the manner of python-diskcache's stress tests).

The model holds every acknowledgement the gateway gave (seq -> the event sent)
and every seq it reported lost (`gateway accept-loss`, `gateway verify`'s
`losses`). After each step: every acknowledged event is in the ledger at its
seq, or its seq is in a reported loss; no seq was ever acknowledged twice, and
none was acknowledged again after being reported lost.

Bounded: about 20 s of steps in the default suite, 3 minutes with
GATEWAY_FAULTS=full (make test-faults). The seed is printed; set
GATEWAY_STRESS_SEED to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field

import yaml
from gatewayproc import AckClient, GatewayProcess, event_line, run_gateway_command, wait_for

from gateway.ledger import format as fmt
from gateway.ledger.store import list_segments

FULL = os.environ.get("GATEWAY_FAULTS") == "full"
BUDGET_S = 180.0 if FULL else 20.0
MAX_STEPS = 400 if FULL else 40


@dataclass
class Model:
    acked: dict[int, int] = field(default_factory=dict)  # seq -> the event's n
    lost: set[int] = field(default_factory=set)  # seqs reported lost
    next_n: int = 0
    log: list[str] = field(default_factory=list)

    def ack(self, seq: int, n: int) -> None:
        assert seq not in self.acked, f"seq {seq} acknowledged twice\n" + "\n".join(self.log)
        assert seq not in self.lost, f"seq {seq} given again after its loss\n" + "\n".join(self.log)
        self.acked[seq] = n

    def lose(self, first: int, last: int) -> None:
        self.lost.update(range(first, last + 1))


def _status(gw: GatewayProcess) -> dict:
    done = run_gateway_command("status", "--json", "--config", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _send(gw: GatewayProcess, model: Model, count: int) -> list[dict]:
    ns = list(range(model.next_n, model.next_n + count))
    model.next_n += count
    replies: list[dict] = []
    with AckClient(gw.port) as client:
        client.send_lines(event_line(type="m", n=n) for n in ns)
        while len(replies) < count:
            line = client.read_line(20)
            if line is None:
                break
            replies.append(json.loads(line))
            if replies[-1].get("error"):
                break  # disk_full and ledger_damaged close the connection
    for n, reply in zip(ns, replies, strict=False):
        if reply.get("ok"):
            model.ack(reply["seq"], n)
    return replies


def _export(gw: GatewayProcess) -> dict[int, dict]:
    done = run_gateway_command("export", "--config", str(gw.config_path))
    out = {}
    for line in done.stdout.splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["seq"]] = record
    return out


def _accept_loss(gw: GatewayProcess, model: Model) -> None:
    if gw.running:
        assert gw.stop() == 0, gw.log_text()
    done = run_gateway_command("accept-loss", "--config", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    m = re.search(r"seqs (\d+) to (\d+) are given up", text)
    if "no loss to accept" not in text:
        assert m, text
        model.lose(int(m.group(1)), int(m.group(2)))
        model.log.append(f"loss accepted: {text.strip()}")
    gw.start()


def _check(gw: GatewayProcess, model: Model) -> None:
    code, result = gw.verify()
    assert code == 0, (result, "\n".join(model.log))
    for loss in result.get("losses", []):
        model.lose(loss["first_seq"], loss["last_seq"])
    held = _export(gw)
    for seq, n in model.acked.items():
        if seq in model.lost:
            continue
        record = held.get(seq)
        assert record is not None and (record.get("event") or {}).get("n") == n, (
            f"acknowledged seq {seq} (event {n}) holds {record}\n" + "\n".join(model.log[-20:])
        )


def _set_config(gw: GatewayProcess, **ledger) -> None:
    config = dict(gw.config)
    config["ledger"] = {**gw.config.get("ledger", {}), **ledger}
    gw.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")


def step_send(gw, model, rng):
    _send(gw, model, rng.randint(1, 300))


def step_kill(gw, model, rng):
    gw.kill()
    gw.start()


def step_restart(gw, model, rng):
    assert gw.stop() == 0, gw.log_text()
    gw.start()


def step_disk_full(gw, model, rng):
    assert gw.stop() == 0
    _set_config(gw, min_free_bytes=1 << 40)  # 1 TiB (the maximum): full from the start
    gw.start()
    replies = _send(gw, model, rng.randint(1, 20))
    assert replies and replies[0].get("error") == "disk_full", replies[:2]
    assert gw.stop() == 0
    _set_config(gw, min_free_bytes=gw.config.get("ledger", {}).get("min_free_bytes", 1 << 20))
    gw.start()


def step_delete_newest_while_running(gw, model, rng):
    _send(gw, model, rng.randint(1, 200))
    segments = list_segments(gw.state_dir / "ledger")
    first, newest = segments[-1]
    newest.unlink()
    model.log.append(f"deleted {newest.name} while running")
    wait_for(lambda: "ledger damaged" in _status(gw)["health"], 10, "the damage noticed")
    replies = _send(gw, model, 1)
    assert replies[0].get("error") == "ledger_damaged", replies
    _accept_loss(gw, model)
    assert min(model.lost) <= first


def step_flip_after_clean_stop(gw, model, rng):
    assert gw.stop() == 0
    _first, newest = list_segments(gw.state_dir / "ledger")[-1]
    data = bytearray(newest.read_bytes())
    if len(data) <= 64:
        gw.start()
        return
    at = rng.randrange(64, len(data))
    data[at] ^= 1 << rng.randrange(8)
    newest.write_bytes(bytes(data))
    model.log.append(f"flipped a bit of {newest.name} at {at}")
    gw.start()
    if "ledger damaged" in _status(gw)["health"]:
        _accept_loss(gw, model)


def _unit_starts(data: bytes) -> list[int]:
    """Offsets of the frames of a segment that start a sync unit (header-walked)."""
    starts, pos = [], fmt.SEGMENT_HEADER_BYTES
    while pos + fmt.FRAME_HEADER_BYTES <= len(data):
        length, _seq = fmt.parse_frame_header(data, pos)
        if fmt.is_unit_start(data, pos):
            starts.append(pos)
        pos += length + fmt.FRAME_OVERHEAD
    return starts


def step_flip_after_kill(gw, model, rng):
    """Damage where a completed sync covered it, after a crash: anywhere in the
    newest segment before its newest sync unit. It must be reported as damage,
    never cut as a torn write (which would give its acknowledged seqs again)."""
    _send(gw, model, rng.randint(1, 200))
    gw.kill()
    _first, newest = list_segments(gw.state_dir / "ledger")[-1]
    data = bytearray(newest.read_bytes())
    starts = _unit_starts(bytes(data))
    if len(starts) < 2:
        gw.start()
        return
    at = rng.randrange(fmt.SEGMENT_HEADER_BYTES, starts[-1])
    data[at] ^= 1 << rng.randrange(8)
    newest.write_bytes(bytes(data))
    model.log.append(
        f"killed, then flipped a bit of {newest.name} at {at} (newest unit {starts[-1]})"
    )
    gw.start()
    assert "ledger damaged" in _status(gw)["health"], gw.log_text()[-2000:]
    _accept_loss(gw, model)


STEPS = [
    (step_send, 8),
    (step_kill, 3),
    (step_restart, 2),
    (step_disk_full, 1),
    (step_delete_newest_while_running, 1),
    (step_flip_after_clean_stop, 1),
    (step_flip_after_kill, 1),
]


def test_every_acknowledged_event_is_kept_or_its_loss_reported(tmp_path):
    seed = int(os.environ.get("GATEWAY_STRESS_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    print(f"stress seed {seed}")
    gw = GatewayProcess(tmp_path, ledger={"segment_bytes": 65536, "min_free_bytes": 1 << 20})
    model = Model()
    started = time.monotonic()
    steps = 0
    try:
        while steps < MAX_STEPS and time.monotonic() - started < BUDGET_S:
            (step,) = rng.choices([s for s, _w in STEPS], [w for _s, w in STEPS])
            model.log.append(f"step {steps}: {step.__name__} (seed {seed})")
            step(gw, model, rng)
            _check(gw, model)
            steps += 1
        print(
            f"stress: {steps} steps in {time.monotonic() - started:.1f} s, "
            f"{len(model.acked)} acknowledged, {len(model.lost)} reported lost"
        )
        assert steps >= 5
        assert len(model.acked) > 0
        if gw.running:
            assert gw.stop(signal.SIGTERM) == 0
    finally:
        gw.close()
