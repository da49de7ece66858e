"""Activities: everything that talks to the outside world (model providers, the Temporal API)."""
