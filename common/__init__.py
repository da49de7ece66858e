"""Pieces shared by the gateway, the worker and the CLI: settings, names and ids."""
