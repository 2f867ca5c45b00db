"""The aiohttp application, intake, connector supervision and the command line."""

__version__ = "0.1.0"
