"""Which reference probe a table uses: probe/2 (one fixed size) or probe/3 (sized to the space).

probe/2 (:data:`PROBE_V2`) has a 15 MB memory half whatever the space: on the tiny 32-px space that half took
~85 % of each request on an emulated board (issue 15). probe/3 keeps the compute half and the unit of the
memory half (copies of a stage-3 basic unit at 7x7, split 0.5) and sizes the unit's width so that the copies'
weights match the space's largest network, capped at probe/2's size, and raised above the board's last-level
cache where the space's largest network overflows it (:func:`probe_spec_for`). A table records the probe's id
and size parameters (:meth:`ProbeSpec.record`); :func:`spec_of` rebuilds the same probe from them, so
validation, lazy filling and transfer of a probe/2 table keep using probe/2.

Since session 6 probe/3 also sizes the compute half's input: ``min(64, the table's resolution)`` pixels (at
least 16). On the tiny 32-px space the 64-px compute half was most of the probe's cost, itself 31 % of a
whole-space request (``benchmarks/bench_probe.py``); at 32 px it runs ~4x faster. Spaces at 64 px or more get
the same compute half as before, so their probe/3 ids are unchanged, and tables recorded before keep loading
(their ``input_shape`` is 3x64x64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from nas.arch import BlockKey

if TYPE_CHECKING:  # pragma: no cover
    from nas.space import SearchSpace

__all__ = ["PROBE_ID", "PROBE_SHAPE", "MEMORY_PROBE_COPIES", "MEMORY_PROBE_SHAPE", "MEMORY_PROBE_CAP_WIDTH",
           "ProbeSpec", "PROBE_V2", "probe_spec_for", "spec_of", "memory_unit", "memory_unit_bytes"]

_COMPUTE_LAYERS = "compute = conv3x3s2 3-24, 1x1 24-64, dw3x3 64, 1x1 64-128, dw3x3s2 128, 1x1 128-128 (BN+ReLU each)"
_COMPUTE = _COMPUTE_LAYERS + ", 3x64x64"
PROBE_ID = ("probe/2: sqrt(compute x memory); " + _COMPUTE +
            "; memory = 8 copies of basic_r7_i976_o976_s0.5_k3 (15 MB of weights)")
PROBE_SHAPE = (3, 64, 64)
COMPUTE_MIN_RESOLUTION = 16  # two stride-2 layers: 16 px leaves a 4x4 map for the last 1x1
MEMORY_PROBE_COPIES = 8  # copies evict each other's weights: the half streams them from memory every run
MEMORY_PROBE_SHAPE = (976, 7, 7)
MEMORY_PROBE_RESOLUTION = MEMORY_PROBE_SHAPE[1]  # stage-3 resolution of a 224-px ShuffleNetV2
MEMORY_PROBE_CAP_WIDTH = MEMORY_PROBE_SHAPE[0]  # probe/3 never exceeds probe/2's memory half (15.5 MB) ...
MEMORY_PROBE_MIN_WIDTH = 16  # ... nor goes below 8 copies of a 16-wide unit (8 KB: a few cache lines per layer)
WIDTH_STEP = 8  # widths in multiples of 8 (split 0.5 needs even widths; 8 keeps SIMD lanes full)
LLC_MARGIN = 1.25  # probe/3 weights >= 1.25 x LLC where the space's largest network overflows it (empirical)
# ... but never more than 48 MiB: with a cold-weights entry (32 MiB, nas.latency.cold.COLD_TARGET_BYTES) a
# request stays within the agent's 128 MiB max_request_bytes even base64-encoded (80 MiB x 4/3 = 107 MiB).
LLC_MAX_BYTES = 48 * 2**20


def memory_unit(width: int, resolution: int = MEMORY_PROBE_RESOLUTION) -> BlockKey:
    """The basic unit the memory half copies, ``width`` channels in and out, split 0.5, at ``resolution``."""
    return BlockKey(kind="basic", resolution=resolution, in_channels=width, out_channels=width, split_ratio=0.5)


def memory_unit_bytes(width: int, resolution: int = MEMORY_PROBE_RESOLUTION) -> int:
    """float32 weight bytes of one :func:`memory_unit` (what :func:`nas.latency.cold.weight_bytes` counts)."""
    from nas.macs import block_macs

    return 4 * int(block_macs(memory_unit(width, resolution), num_classes=1000).params)


@dataclass(frozen=True)
class ProbeSpec:
    """One reference probe: the compute half (probe/2's network, at ``compute_resolution``) and the memory
    half's size.

    Attributes:
        version: 2 (the fixed probe of older tables) or 3 (sized to the space).
        memory_copies: copies of the unit in the memory half.
        memory_width: channels of the unit.
        memory_resolution: spatial size of the unit's input.
        compute_resolution: spatial size of the compute half's input (64 for probe/2 and older probe/3).
        sized_from: for probe/3, what the size was chosen from (``space_max_weight_bytes``, ``llc_bytes``);
            provenance only, not part of the probe's identity.
    """

    version: int = 2
    memory_copies: int = MEMORY_PROBE_COPIES
    memory_width: int = MEMORY_PROBE_SHAPE[0]
    memory_resolution: int = MEMORY_PROBE_RESOLUTION
    sized_from: Mapping[str, Any] | None = None
    compute_resolution: int = PROBE_SHAPE[1]

    @property
    def compute_shape(self) -> tuple[int, int, int]:
        return (PROBE_SHAPE[0], self.compute_resolution, self.compute_resolution)

    @property
    def memory_shape(self) -> tuple[int, int, int]:
        return (self.memory_width, self.memory_resolution, self.memory_resolution)

    @property
    def memory_bytes(self) -> int:
        return self.memory_copies * memory_unit_bytes(self.memory_width, self.memory_resolution)

    @property
    def id(self) -> str:
        """The id stored in a table: probe times are comparable only between equal ids."""
        if self.version == 2:
            return PROBE_ID
        unit = memory_unit(self.memory_width, self.memory_resolution).id.split("_se")[0]
        r = self.compute_resolution
        return (f"probe/3: sqrt(compute x memory); {_COMPUTE_LAYERS}, 3x{r}x{r}; "
                f"memory = {self.memory_copies} copies of {unit} ({self.memory_bytes / 1e6:.3g} MB of weights)")

    def record(self) -> dict[str, Any]:
        """The table's ``probe`` fields that name this probe (probe/2 tables keep their old fields only)."""
        if self.version == 2:
            return {"id": PROBE_ID, "input_shape": list(PROBE_SHAPE)}
        memory = {"copies": self.memory_copies, "width": self.memory_width, "resolution": self.memory_resolution}
        return {"id": self.id, "version": 3, "input_shape": list(self.compute_shape), "memory": memory,
                **({"sized_from": dict(self.sized_from)} if self.sized_from else {})}


PROBE_V2 = ProbeSpec()


def _largest_weight_bytes(space: "SearchSpace", resolution: int, num_classes: int) -> int:
    """float32 weights of the space's largest network (every knob at its largest: the widest, deepest)."""
    from nas.macs import block_macs

    cfg = space.largest().with_resolution(resolution)
    return sum(4 * int(block_macs(k, num_classes=num_classes).params) for k in cfg.blocks())


def probe_spec_for(space: "SearchSpace", *, resolution: int, num_classes: int = 1000,
                   llc_bytes: int | None = None) -> ProbeSpec:
    """The probe/3 of a table of ``space``: memory-half weights ~= the space's largest network's, at most
    probe/2's 15.5 MB, and about ``LLC_MARGIN`` x the last-level cache where that network overflows it (a
    little under: widths step by 8 channels).

    Args:
        space: the table's space.
        resolution: the table's input resolution.
        num_classes: classifier width (the head's weights count).
        llc_bytes: the board's last-level cache in bytes, where known (``llc_bytes`` of its identity).

    Returns:
        A version-3 :class:`ProbeSpec` with :data:`MEMORY_PROBE_COPIES` copies of the widest unit (a multiple
        of 8 between 16 and 976 channels) whose weights do not exceed the target, and a compute half at
        ``min(64, resolution)`` px (at least :data:`COMPUTE_MIN_RESOLUTION`).
    """
    largest = _largest_weight_bytes(space, resolution, num_classes)
    target = min(largest, MEMORY_PROBE_COPIES * memory_unit_bytes(MEMORY_PROBE_CAP_WIDTH))
    if llc_bytes and largest > llc_bytes:
        target = max(target, min(int(LLC_MARGIN * llc_bytes), LLC_MAX_BYTES, largest))
    per_copy = target / MEMORY_PROBE_COPIES
    # Weights of a split-0.5 basic unit grow as ~2 x width^2 bytes: start there, then step to the exact width.
    width = max(MEMORY_PROBE_MIN_WIDTH, int(math.sqrt(per_copy / 2.0)) // WIDTH_STEP * WIDTH_STEP)
    while width + WIDTH_STEP <= LLC_MAX_WIDTH and memory_unit_bytes(width + WIDTH_STEP) <= per_copy:
        width += WIDTH_STEP
    while width > MEMORY_PROBE_MIN_WIDTH and memory_unit_bytes(width) > per_copy:
        width -= WIDTH_STEP
    sized = {"space_max_weight_bytes": largest, **({"llc_bytes": int(llc_bytes)} if llc_bytes else {})}
    compute = max(COMPUTE_MIN_RESOLUTION, min(PROBE_SHAPE[1], int(resolution)))
    return ProbeSpec(version=3, memory_width=width, sized_from=sized, compute_resolution=compute)


# Widest unit probe/3 may try: about 8 copies of LLC_MAX_BYTES (1768 channels; the search keeps the exact
# weights <= its target).
LLC_MAX_WIDTH = int(math.sqrt(LLC_MAX_BYTES / MEMORY_PROBE_COPIES / 2.0)) // WIDTH_STEP * WIDTH_STEP


def spec_of(probe: Mapping[str, Any]) -> ProbeSpec | None:
    """The probe a table's ``probe`` record names, rebuilt from its size parameters; None for a probe this
    version does not know (an older probe's table, or a record whose id does not match its parameters)."""
    if probe.get("id") == PROBE_ID:
        return PROBE_V2
    memory = probe.get("memory")
    if probe.get("version") != 3 or not isinstance(memory, Mapping):
        return None
    try:
        shape = probe.get("input_shape") or PROBE_SHAPE
        spec = ProbeSpec(version=3, memory_copies=int(memory["copies"]), memory_width=int(memory["width"]),
                         memory_resolution=int(memory["resolution"]), sized_from=probe.get("sized_from"),
                         compute_resolution=int(shape[-1]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return spec if spec.id == probe.get("id") else None
