"""The web chat page: static files (no build step) and the router that serves them."""
