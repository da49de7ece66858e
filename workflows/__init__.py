"""The chat session workflow and the messages it exchanges."""
