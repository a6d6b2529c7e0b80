"""Print Gateway: a compliance print gateway appliance.

Events arrive over TCP, are appended to a BLAKE3-chained CBOR ledger, and are
acknowledged only once durable. See README.md and docs/.
"""

__version__ = "0.1.0"

# The modules a reader starts from; docs/architecture.md maps the rest.
__all__ = ["__version__", "cli", "config", "service"]
