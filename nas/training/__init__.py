"""Data sets and training: the short proxy training of the search and full training."""
