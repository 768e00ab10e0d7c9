"""One module per paper (see DESIGN.md)."""
