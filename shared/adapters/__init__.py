"""Adapters behind the ports of :mod:`shared.ports`, built by ``shared.bootstrap``."""
