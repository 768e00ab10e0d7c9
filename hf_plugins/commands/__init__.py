"""Per-paper CLI verbs. Each module here defines ``register(subparsers)`` adding its sub-command(s)."""


def read_text_lines(paths) -> list[str]:
    """The non-empty lines of text files (one text per line), for the verbs that take a corpus."""
    lines = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            lines += [line.strip() for line in fh if line.strip()]
    if not lines:
        raise ValueError(f"the files {list(paths)} hold no text")
    return lines
