"""The `cloudpbx` provider (being written)."""
