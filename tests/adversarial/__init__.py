"""Hostile clients, upstreams and inputs: the permanent adversarial suite (docs/security.md)."""
