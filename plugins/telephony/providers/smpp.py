"""The `smpp` provider (being written)."""
