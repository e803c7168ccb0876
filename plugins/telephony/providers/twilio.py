"""The `twilio` provider (being written)."""
