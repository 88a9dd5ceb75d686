"""Reliability and security suite: fault injection against the real code paths (see docs/reliability.md)."""
