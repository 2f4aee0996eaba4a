"""The ``.pt`` checkpoint that export writes (the ``pt`` format) and reads (``weights=``).

The format itself lives in the core, :mod:`nas.checkpoint`, because full training writes it too and neither
stage may import the other; this module re-exports it under the export package.
"""

from __future__ import annotations

from nas.checkpoint import CHECKPOINT_FORMAT, checkpoint_dict, load_checkpoint, read_checkpoint

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_dict", "read_checkpoint", "load_checkpoint"]
