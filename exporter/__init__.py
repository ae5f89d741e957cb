"""Prometheus exporter for Webex Campaign target groups."""

__version__ = "0.1.0"
