"""``nas compare``'s library half: the Table 8 reference networks and exported search results measured end to
end on one backend, grouped by the paper's complexity groups, with a latency table's prediction alongside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas.errors import TableMismatchError, UsageError
from nas.paper.counting import module_macs
from nas.paper.settings import default_settings
from nas.paper.zoo import ReferenceNet, complexity_group

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["CompareRow", "check_table_identity", "compare_entries", "run_compare"]


@dataclass(frozen=True)
class CompareRow:
    """One measured network of ``nas compare`` (the paper's Table 8 layout)."""

    name: str
    label: str
    source: str  # "reference" or the config file it came from
    resolution: int
    macs: int
    params: int
    group_mflops: int  # the paper's complexity group this row falls in
    latency_ms: float
    spread_pct: float
    images_per_s: float
    paper_mflops: float | None = None
    paper_top1_err: float | None = None
    paper_gpu_batches_s: float | None = None
    paper_arm_images_s: float | None = None
    predicted_latency_ms: float | None = None  # from a latency table, where one was given and covers it
    flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Entry:
    name: str
    label: str
    source: str
    resolution: int
    build: Callable[[], "nn.Module"]
    ref: ReferenceNet | None = None
    config: Any = None


def compare_entries(*, nets: Sequence[ReferenceNet], configs: Sequence[str | Path] = ()) -> list[_Entry]:
    """Reference nets plus exported configs (plain or ``{"config": ..., "provenance": ...}`` JSON).

    Raises:
        ConfigError: a config file is missing or invalid (the message names the file).
    """
    from nas.arch import load_config
    from nas.builder import build_model

    out = [_Entry(n.name, n.label, "reference", n.resolution, n.build, ref=n) for n in nets]
    for path in configs:
        cfg = load_config(path)
        name = cfg.name or Path(path).stem
        out.append(_Entry(name, name, str(path), cfg.resolution,
                          lambda cfg=cfg: build_model(cfg).eval(), config=cfg))
    return out


def run_compare(backend: Any, *, nets: Sequence[ReferenceNet], configs: Sequence[str | Path] = (),
                settings: Any = None, table: Any = None,
                on_step: Callable[[str], None] | None = None) -> list[CompareRow]:
    """Measure reference networks and exported search results end to end on ``backend``.

    The networks of one complexity group (:func:`complexity_group`) are timed together with
    interleaved rounds (the latency tables' protocol); groups are measured one after another.

    Args:
        backend: a :class:`nas.backends.Backend`; its batch size is used for every network.
        nets: reference networks (see :func:`reference_nets`).
        configs: exported ``ArchConfig`` JSON files (search results) to add as rows.
        settings: a :class:`nas.backends.MeasureSettings` (default: the tables' network protocol).
        table: an optional latency table; configs it covers also get its predicted latency.
        on_step: called before each complexity group is built and measured (progress).

    Returns:
        One :class:`CompareRow` per network, references first, in the given order.
        ``group_mflops`` is the group of the paper's complexity (references) or of the config's MACs.

    Raises:
        ConfigError: a config file is missing or invalid.
        UsageError: neither nets nor configs (field ``nets``).
        MeasurementError, AgentError, BackendUnavailableError: from the backend.
    """
    entries = compare_entries(nets=nets, configs=configs)
    if not entries:
        raise UsageError("nothing to measure: no reference nets and no configs; widen the budget or the names, "
                         "or give config files", field="nets")
    settings = default_settings(settings)
    # Measured one complexity group at a time (the paper's grouping): the nets of a group, which are the
    # ones compared with each other, share interleaved rounds, and only one group's models are in memory.
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        mflops = e.ref.paper_mflops * 1e6 if e.ref else _config_macs(e.config)
        groups.setdefault(complexity_group(mflops), []).append(i)
    rows: dict[int, CompareRow] = {}
    for group, idx in sorted(groups.items()):
        if on_step:
            on_step(f"~{group} MFLOPs: " + ", ".join(entries[i].name for i in idx))
        models = [entries[i].build() for i in idx]
        counts = [module_macs(m, (1, 3, entries[i].resolution, entries[i].resolution)) for m, i in zip(models, idx)]
        meas = backend.measure_many(models, input_shapes=[(3, entries[i].resolution, entries[i].resolution)
                                                          for i in idx], settings=settings)
        del models
        for i, (macs, params), m in zip(idx, counts, meas):
            e, r = entries[i], entries[i].ref
            rows[i] = CompareRow(
                e.name, e.label, e.source, e.resolution, macs, params, group, m.median_ms, m.spread_pct,
                backend.batch * 1000.0 / m.median_ms,
                paper_mflops=r.paper_mflops if r else None, paper_top1_err=r.paper_top1_err if r else None,
                paper_gpu_batches_s=r.paper_gpu_batches_s if r else None,
                paper_arm_images_s=r.paper_arm_images_s if r else None,
                predicted_latency_ms=_predict(table, e.config) if table is not None and e.config else None,
                flagged=bool(getattr(m, "flagged", False)),
            )
    return [rows[i] for i in range(len(entries))]


def _config_macs(config: Any) -> float:
    from nas.macs import count_macs

    return float(count_macs(config).macs)


def _predict(table: Any, config: Any) -> float | None:
    """The table's latency prediction for ``config`` (ms), or None where the table does not cover it
    (another resolution, blocks outside its space)."""
    from nas.errors import NasError
    from nas.latency.table import predict

    try:
        return float(predict(config, table).latency_ms)
    except NasError:
        return None


def check_table_identity(table: Any, identity: dict[str, Any], *, path: "str | Path") -> None:
    """Refuse to put a table's predictions next to measurements from another machine or runtime.

    Args:
        table: the latency table (its ``identity`` is compared).
        identity: the identity of the backend about to measure.
        path: the table's file, for the message.

    Raises:
        TableMismatchError: the identities differ on a comparable key (field ``table``).
    """
    from nas.backends.identity import identity_diff

    diff = identity_diff(table.identity, identity, sides=("table", "here"))
    if diff:
        raise TableMismatchError(f"table {path}: measured elsewhere ({diff[0]}); compare where the table was built "
                                 "(or through its board agent), or without the table", field="table")
