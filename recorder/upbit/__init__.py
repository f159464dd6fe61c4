"""Upbit announcements: poller, title parser, firing rule and trigger."""
