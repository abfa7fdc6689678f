"""The audit trail: every change and every credential delivery, recorded in the change's own
transaction (SPEC §8). No entry holds a secret or a token."""
