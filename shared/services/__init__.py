"""Use cases; they talk to ports only."""
