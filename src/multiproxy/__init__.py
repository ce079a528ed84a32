"""multiproxy: a Twisted-based multi-protocol proxy framework."""
