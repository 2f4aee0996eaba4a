"""The board-side measurement server (`nas agent`)."""
