"""The WordPress plugin bundles the PHP client library: its copy must be the library itself."""

from __future__ import annotations

from gatewayproc import ROOT

LIBRARY = ROOT / "clients" / "php"
COPY = ROOT / "clients" / "wordpress" / "print-gateway" / "lib" / "print-gateway-client"


def files(base) -> dict[str, bytes]:
    out = {"autoload.php": (base / "autoload.php").read_bytes()}
    for path in sorted((base / "src").rglob("*")):
        if path.is_file():
            out[str(path.relative_to(base))] = path.read_bytes()
    return out


def test_the_plugin_bundles_the_current_library() -> None:
    library, copy = files(LIBRARY), files(COPY)
    assert library.keys() == copy.keys(), "run `make php-vendor`"
    stale = [name for name in library if library[name] != copy[name]]
    assert stale == [], f"the plugin's copy differs in {stale}: run `make php-vendor`"
