"""The shape of the code: registries declared once, and no import cycle anywhere.

Imports are read from the source (module level and inside functions alike),
so a cycle hidden in a function body is found too. Only `if TYPE_CHECKING:`
blocks are left out: they are never executed, they only name types.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.clock import FakeClock
from gateway.config import Config, IngestConfig, PrinterConfig, RouteConfig
from gateway.printing import transports, uri
from gateway.render import languages
from gateway.service import Gateway

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "board", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for block in ast.walk(tree):
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
                block.body = []
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_gateway_board_or_bench():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_uri_scheme_has_its_transport_and_languages_have_extensions():
    assert transports.TRANSPORTS.keys() == uri.SCHEMES.keys()
    assert all(spec.extension for spec in languages.LANGUAGES.values())


def test_the_memory_printer_takes_receipts(tmp_path):
    transports.MEMORY_PRINTERS.pop("arch", None)
    config = Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        printers={"m": PrinterConfig(uri="memory:arch")},
        routes=(RouteConfig(printer=("m",)),),
    )
    from inproc import pump

    gw = Gateway(config, clock=FakeClock())
    address = gw.start()[0]
    import socket

    with socket.create_connection(address) as client:
        client.sendall(b'{"event_type":"memo","timestamp":"2026-12-01T10:00:00Z"}\n')
    pump(gw, lambda: transports.MEMORY_PRINTERS.get("arch"))
    gw.request_stop()
    gw._finish()
    (job,) = transports.MEMORY_PRINTERS["arch"]
    assert b"memo" in job
