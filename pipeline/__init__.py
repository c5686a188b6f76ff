"""edgesight: real-time video analytics, cameras in, detections out over ZeroMQ."""

__version__ = "0.1.0"
"""The package's version, equal to pyproject.toml's (a test checks); installed metadata is asked first."""
