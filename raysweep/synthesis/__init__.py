"""Generate once, sweep many: the synthetic store, the generator actors and the service."""
