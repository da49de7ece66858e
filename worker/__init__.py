"""The worker process: runs session workflows and their activities."""
