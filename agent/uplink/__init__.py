"""Delivery to the integration API: client, token loading, sandbox."""
