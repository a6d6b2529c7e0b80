"""The audit trail: the derived query index, queries, checks, details and statements."""

__all__ = ["check", "index", "present", "query", "statement"]
