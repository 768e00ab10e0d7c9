"""Per-paper CLI verbs. Each module here defines ``register(subparsers)`` adding its sub-command(s)."""
