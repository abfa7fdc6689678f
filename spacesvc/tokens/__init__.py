"""API tokens: their model and the SQL that manages and verifies them."""
