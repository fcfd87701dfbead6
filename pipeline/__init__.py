"""taskpulse: stream processing for fleets of AI agents and task runners."""

__version__ = "0.1.0"
