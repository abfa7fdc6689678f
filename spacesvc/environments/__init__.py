"""Environments (docs/api.md): the list BRIDGEPORT enables the Spaces configuration for, and that
tokens for workloads are bound to."""
