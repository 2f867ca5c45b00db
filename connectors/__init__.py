"""Channel connectors: one module per channel, all built on :mod:`connectors.base`."""
