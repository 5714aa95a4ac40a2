"""AWS adapters behind the ports of :mod:`shared.ports`; only ``wiring`` imports them."""
