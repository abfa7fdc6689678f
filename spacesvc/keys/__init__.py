"""Keys of their own for environments: the issuers that mint, list and delete them (docs/keys.md)."""
