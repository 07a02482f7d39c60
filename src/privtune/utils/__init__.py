"""Small shared utilities: atomic file output, progress display, hashing."""
