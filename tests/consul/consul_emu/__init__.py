"""Consul agent emulator for sluice's test suite (Python standard library only)."""
