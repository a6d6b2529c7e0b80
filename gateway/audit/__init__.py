"""The audit trail: the derived query index, queries, entry details with diffs."""
