"""Telemetry over the wire: a test OTLP receiver, a real Jaeger, and the viewing configuration."""
