"""The HTTP gateway: a stateless FastAPI app that sends signals, updates and queries."""
