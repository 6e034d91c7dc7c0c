"""Fixtures for the sign-in core: the local identity provider."""
