"""marketpulse: real-time market data behind the official Convex clients."""

__all__ = ["__version__"]

__version__ = "0.1.0"
