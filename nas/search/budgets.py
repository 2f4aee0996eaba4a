"""Budgets: a network's figures (MACs, params, predicted latency), its slack under each budget, and the
up-front refusal of budgets no network of the space meets (an impossible budget is an error, not a hang)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from nas.arch import ArchConfig
from nas.errors import BudgetError, MissingEntriesError, UsageError
from nas.units import Budget

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["Figures", "Scorer", "check_budgets", "describe_violation", "DEFAULT_NUM_CLASSES"]

DEFAULT_NUM_CLASSES = 1000  # the ImageNet head the paper's MFLOPs are counted with, when no table says otherwise


@dataclass(frozen=True)
class Figures:
    """A network's MACs, params and predicted latency (ms, with its uncertainty; None without a table)."""

    macs: int
    params: int
    latency_ms: float | None
    latency_uncertainty_ms: float | None


class Scorer:
    """MACs, params and predicted latency of a config, and its constraint values under the budgets."""

    def __init__(self, space: "SearchSpace", table: "LatencyTable | None", budgets: Sequence[Budget],
                 objective: str) -> None:
        self.space = space
        self.table = table
        self.budgets = tuple(budgets)
        self.objective = objective
        self.num_classes = table.num_classes if table is not None else DEFAULT_NUM_CLASSES
        self.mins = {k: min(v) for k, v in space.knobs().items()}

    def figures(self, config: ArchConfig) -> Figures:
        from nas.macs import count_macs
        from nas.latency.prediction import predict

        m = count_macs(config, num_classes=self.num_classes)
        lat = unc = None
        if self.table is not None:
            p = predict(config, self.table)
            lat, unc = p.latency_ms, p.uncertainty_ms
        return Figures(m.macs, m.params, lat, unc)

    def value(self, budget: Budget, f: Figures) -> float:
        v = {"macs": f.macs, "params": f.params, "latency_ms": f.latency_ms}[budget.metric]
        if v is None:
            raise UsageError(f"budget {budget.text}: a latency budget needs a latency table", field="table")
        return float(v)

    def slacks(self, f: Figures) -> dict[str, float]:
        """Optuna constraint values by budget text: feasible when <= 0 (in the budget's base unit)."""
        return {b.text: b.slack(self.value(b, f)) for b in self.budgets}

    def cost(self, f: Figures) -> float:
        """The second objective: predicted latency (ms) or MFLOPs (mult-adds, millions)."""
        return float(f.latency_ms) if self.objective == "latency" else f.macs / 1e6

    def excess(self, params: dict[str, Any]) -> float:
        """How far the network ``params`` (unset knobs at their smallest) is over its budgets:
        ``max over budgets of value / limit - 1`` (<= 0 fits; inf when the table lacks one of its blocks)."""
        cfg = self.space.sample(None, fixed={**self.mins, **params})
        try:
            f = self.figures(cfg)
        except MissingEntriesError:
            return float("inf")
        return max(self.value(b, f) / b.limit - 1.0 for b in self.budgets)

    def fits(self, params: dict[str, Any]) -> bool:
        """True if the config with ``params`` set and every other knob at its smallest choice fits."""
        cfg = self.space.sample(None, fixed={**self.mins, **params})
        try:
            f = self.figures(cfg)
        except MissingEntriesError:
            return False
        return all(v <= 0 for v in self.slacks(f).values())


def describe_violation(budget: Budget, value: float) -> str:
    unit = {"macs": (1e6, "MFLOPs"), "params": (1e6, "Mparams"), "latency_ms": (1.0, "ms")}[budget.metric]
    return f"{value / unit[0]:.4g} {unit[1]} > budget {budget.text}"


def check_budgets(space: "SearchSpace", budgets: Sequence[Budget], table: "LatencyTable | None", *,
                  objective: str = "latency") -> None:
    """Refuse budgets no network of the space meets, and latency budgets or objectives without a table.

    Args:
        space: the search space.
        budgets: the hard budgets.
        table: the space's latency table, or None.
        objective: ``"latency"`` or ``"flops"``.

    Raises:
        BudgetError: the space's smallest network already breaks a budget (the message gives its figure).
        UsageError: latency asked for without a table.
    """
    if table is None and (objective == "latency" or any(b.metric == "latency_ms" for b in budgets)):
        raise UsageError("table: a latency objective or budget needs a latency table; build one with "
                         "nas.build_table, or use objective='flops' with MAC/param budgets", field="table")
    sc = Scorer(space, table, budgets, objective)
    smallest = space.smallest()
    f = sc.figures(smallest)
    for b in budgets:
        v = sc.value(b, f)
        if v > b.limit:
            raise BudgetError(f"budget {b.text}: below the smallest network of space {space.name!r} "
                              f"({describe_violation(b, v).split(' >')[0]}); raise the budget or use a "
                              "smaller space", field="budget")

