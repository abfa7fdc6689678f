"""Numbered plain-SQL migrations, applied in order by ``spacesvc migrate``."""
