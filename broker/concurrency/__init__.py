"""Concurrency permits shared by every replica through Redis (DESIGN §7)."""
