"""raysweep."""
