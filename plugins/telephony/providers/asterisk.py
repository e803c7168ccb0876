"""The `asterisk` provider (being written)."""
