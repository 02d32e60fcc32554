"""rehost: a self-hosted lift-and-shift migration service, wire-compatible with AWS MGN."""

__version__ = "0.1.0"
