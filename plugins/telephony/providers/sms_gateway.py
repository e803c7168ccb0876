"""The `sms_gateway` provider (being written)."""
