"""Nightly WhatsApp conversation-start billing: rules, pricing, audit, publish."""
