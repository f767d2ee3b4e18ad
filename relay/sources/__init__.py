"""Inbound senders: how each one's requests are verified and read into relay's event."""
