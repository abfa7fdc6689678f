"""What every versioned resource shares (``versioned``): its write lock, preconditions, version,
audit entry, change notification and the live state's copy of it."""
