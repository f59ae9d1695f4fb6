"""marketpulse: real-time market data behind the official Convex clients."""

__version__ = "0.1.0"
