"""A full training run's folder: its per-epoch checkpoint (written atomically, continued on the next call),
the trained ``model.pt`` and ``result.json``.

The checkpoint (:data:`TRAIN_CHECKPOINT_FORMAT`) holds the model (plain ``build_model`` keys), optimizer,
scheduler, epoch, history, the run's identity and every RNG state that drives it (the batch-order/flip generator
and torch's global state); a kill at any moment leaves the previous epoch's file. A checkpoint is continued only
if its identity (config, data, seed, settings) matches the new call's; the message names what differs.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._io import atomic_write_bytes, ensure_writable_dir
from nas.arch import ArchConfig
from nas.errors import UsageError

__all__ = ["CHECKPOINT_NAME", "RESULT_NAME", "MODEL_NAME", "TRAIN_CHECKPOINT_FORMAT", "RunFiles", "open_run_dir",
           "run_identity", "load_resumable", "save_torch", "write_file", "read_checkpoint_epoch",
           "ensure_writable_dir"]

CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"
MODEL_NAME = "model.pt"
TRAIN_CHECKPOINT_FORMAT = "nas-train-checkpoint/1"


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run folder."""

    checkpoint: Path
    model: Path
    result: Path

    def as_dict(self) -> dict[str, str]:
        return {"checkpoint": str(self.checkpoint), "model": str(self.model), "result": str(self.result)}


def open_run_dir(out_dir: "str | Path") -> RunFiles:
    """Create the run folder and remove temp files a killed write left in it.

    Raises:
        UsageError: the folder cannot be created or written (``field="out"``).
    """
    out = ensure_writable_dir(out_dir)
    for stale in out.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # nas._io's temp-file pattern
        with contextlib.suppress(OSError):
            stale.unlink()
    return RunFiles(out / CHECKPOINT_NAME, out / MODEL_NAME, out / RESULT_NAME)


def run_identity(cfg: ArchConfig, settings: dict[str, Any], seed: int, data: str) -> dict[str, Any]:
    """What a checkpoint must match to be continued (``threads`` and the tiny-map path change speed, not the run)."""
    s = dict(settings)
    s.pop("threads", None)
    s.pop("tiny_map_path", None)
    return {"config_hash": cfg.hash(), "settings": s, "seed": seed, "data": data}


def load_resumable(files: RunFiles, identity: dict[str, Any], *, restart: bool) -> dict[str, Any] | None:
    """The checkpoint to continue, or None; with ``restart`` the folder's run files are deleted instead.

    Raises:
        UsageError: the checkpoint is unreadable or holds another run (``field="out"``; the message names the
            differing keys, e.g. ``settings.lr``).
    """
    import torch

    if restart:
        for p in (files.checkpoint, files.model, files.result):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return None
    if not files.checkpoint.is_file():
        return None
    try:
        ck = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or corrupt file; atomic writes never leave a partial checkpoint
        raise UsageError(f"{files.checkpoint}: unreadable checkpoint ({str(e).splitlines()[0][:100]}); "
                         "use another out_dir or restart", field="out") from None
    stored = json.loads(ck.get("identity", "{}"))
    diff = [k for k in identity if stored.get(k) != identity[k]]
    if "settings" in diff:
        diff.remove("settings")
        diff += [f"settings.{k}" for k in identity["settings"]
                 if stored.get("settings", {}).get(k) != identity["settings"][k]]
    if diff:
        raise UsageError(f"{files.checkpoint}: holds a run with a different {', '.join(diff)}; use another "
                         "out_dir, or restart to discard it", field="out")
    return ck


def save_torch(obj: Any) -> bytes:
    """``torch.save(obj)`` as bytes (written with :func:`write_file`)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Write a run file atomically.

    Raises:
        UsageError: it cannot be written (``field="out"``).
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise UsageError(f"{path}: cannot write ({e.strerror or e}); choose another out_dir", field="out") from None


def read_checkpoint_epoch(out_dir: "str | Path") -> int:
    """The last completed epoch recorded in ``out_dir``'s checkpoint (0 if there is none)."""
    import torch

    p = Path(out_dir) / CHECKPOINT_NAME
    if not p.is_file():
        return 0
    return int(torch.load(p, map_location="cpu", weights_only=True)["epoch"])
