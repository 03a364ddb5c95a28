"""Concurrency permits shared by every replica through Redis (docs/design.md, "Redis layout")."""
