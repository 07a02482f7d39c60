"""Small shared utilities: atomic file output, progress display, hashing, the hub's offline mode."""
