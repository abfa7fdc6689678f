"""spacesvc: the global Spaces / S3 configuration service."""

__version__ = "0.1.0"
