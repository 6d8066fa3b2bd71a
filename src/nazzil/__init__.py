"""nazzil: a self-hosted web video downloader."""

__version__ = "0.1.0"
