"""The tamper-evident ledger: pure framing (format), segment files (store),
the group-commit thread (durability) and the verifier (verify)."""
