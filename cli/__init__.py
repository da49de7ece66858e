"""A terminal chat client for the gateway: `python -m cli chat | sessions | history ID`."""
