"""The local stack: Temporal dev server, worker and gateway in one command (`make run`)."""
