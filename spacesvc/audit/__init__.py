"""The audit trail: every change and every credential delivery, recorded in the change's own
transaction (docs/api.md). No entry holds a secret or a token."""
