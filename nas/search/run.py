"""The search: one multi-objective Optuna study per run, resumable, shared by any number of workers.

Objectives: maximise proxy accuracy (:func:`nas.training.proxy.proxy_train`, or a zero-cost score), minimise the
latency predicted from a measured table (:func:`nas.latency.table.predict`) or, with ``objective="flops"``, the
MACs (the baseline the paper argues against). Budgets (:func:`nas.units.parse_budget`) are hard
constraints set with ``trial.set_constraint``; Optuna's Pareto front (``study.best_trials``) and its TPE and
NSGA-II samplers honour them.

Design decisions, and why:

* **No trial is wasted on a budget.** The sampler is wrapped (:class:`BudgetGuardSampler`): each knob the
  base sampler proposes is kept only if the network with every still-unset knob at its smallest choice
  fits every budget (the analytic MAC counter, ~0.1 ms, and the table's prediction, a few lookups); else
  the base sampler is asked again (at most ``GUARD_TRIES`` times), then a fitting choice is drawn with the
  trial's own seeded RNG. The smallest choice of the current knob reproduces the previous, already checked
  network, so a fitting choice always exists and the last check is exact: every sampled network fits, on
  any budget at or above ``space.smallest()`` (below it is a :class:`BudgetError` up front). Knobs are
  suggested in a per-trial shuffled order so that no knob is always first to take the budget. A network
  that still breaks a budget (an enqueued one) is recorded infeasible, with accuracy 0, *before* training.
* **Storage.** Default: SQLite at ``runs/<study>/study.db`` (:func:`default_storage`), in WAL mode. SQLite
  commits atomically, so ``kill -9`` loses at most the trial in flight; a journal file is append-only but a
  torn last line makes every later read fail. SQLite serves several processes on one machine, is a plain
  URL for ``nas report``/``nas export``/``optuna-dashboard``; for several machines use PostgreSQL (or any
  SQLAlchemy URL Optuna accepts) and start ``nas search`` with the same ``--storage``/``--study`` on each.
* **Exactly N trials, any number of workers.** ``n_trials`` is the study's total (complete + pruned + failed
  + running), not "N more". A worker claims a trial under a lock that spans "count the study's trials" and
  "create one" (:class:`_ClaimLock`: ``flock`` beside an SQLite file, ``pg_advisory_lock`` on PostgreSQL,
  ``GET_LOCK`` on MySQL; all released by the OS/server if the worker dies), so the count never passes N and
  trial numbers stay unique and dense.
* **Resume.** Re-running the same command loads the study, checks it was made with the same space,
  objective, budgets, proxy, data, seed and table, fails trials left RUNNING by dead workers (same host:
  the worker's pid is gone; any host: no heartbeat for ``GRACE_S``) and continues to the requested total.
* **Pruning.** Optuna does not prune multi-objective trials, and "below the median accuracy" would kill
  exactly the small, fast networks that belong on the front. A trial is stopped at a report point when
  at least ``PRUNE_MIN_PEERS`` completed trials that are no slower (latency or MACs, known before training)
  reached a higher median accuracy at the same step: it is then dominated at that fidelity. It is recorded
  PRUNED (its partial accuracy in the attributes), so it never enters the front.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import re
import socket
import statistics
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from nas.arch import PRESETS, ArchConfig
from nas.errors import (BudgetError, MissingEntriesError, NasError, StorageError, TrainingDivergedError,
                        UsageError)
from nas.training.proxy import PROXY_PRESETS, ProxySettings
from nas.units import Budget

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from nas.space import SearchSpace
    from nas.latency.table import LatencyTable

__all__ = [
    "SearchSettings",
    "SearchStatus",
    "SearchResult",
    "BudgetGuardSampler",
    "search",
    "open_study",
    "default_storage",
    "check_budgets",
    "evaluate_config",
    "score_presets",
    "study_name_for",
    "SAMPLERS",
    "OBJECTIVES",
]

SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("latency", "flops")
GUARD_TRIES = 8  # base-sampler proposals per knob before a fitting choice is drawn directly
PRUNE_MIN_PEERS = 4  # completed, no-slower trials needed at a report point before a trial may be stopped
HEARTBEAT_S = 10  # a running trial writes a heartbeat this often (s) ...
GRACE_S = 60  # ... and is failed by any worker once none came for this long (a worker on another host died)
SQLITE_TIMEOUT_S = 60.0  # how long an SQLite writer waits for another process's write lock
CONNECT_TIMEOUT_S = 5  # server storages: fail fast on an unreachable host instead of hanging


# ----------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SearchSettings:
    """Everything that fixes a search except the space, the table and where the study lives.

    Attributes:
        budgets: hard constraints (at least one), e.g. ``parse_budget("150MFLOPs")``.
        n_trials: the study's total number of trials (complete + pruned + failed), not "N more".
        objective: ``"latency"`` (predicted from the table) or ``"flops"`` (MACs) as the second objective.
        sampler: ``"tpe"`` (Optuna's multi-objective default), ``"nsga2"`` or ``"random"``.
        seed: seeds the sampler, the knob order and every proxy run (all candidates share it: common random
            numbers make their accuracies comparable).
        proxy: ``"train"`` (short training, accuracy in [0, 1]) or ``"zero-cost"`` (NASWOT score at init).
        proxy_settings: the proxy's budget and recipe.
        data: the ``--data`` spec the proxy trains on.
        timeout_s: stop claiming new trials after this many seconds of this run (None: no limit).
        workers: processes on this machine; others may join from anywhere with the same storage and study.
        device: where the proxy trains (``cpu`` or ``cuda``).
        prune: stop dominated candidates early (see the module docstring).
        presets: which ShuffleNetV2 presets get a proxy accuracy for reference: ``all``, ``feasible`` (those
            within every budget) or ``none``; MACs and latency are always given.
    """

    budgets: tuple[Budget, ...]
    n_trials: int
    objective: Literal["latency", "flops"] = "latency"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    proxy: Literal["train", "zero-cost"] = "train"
    proxy_settings: ProxySettings = PROXY_PRESETS["quick"]
    data: str = "bundled"
    timeout_s: float | None = None
    workers: int = 1
    device: str = "cpu"
    prune: bool = True
    presets: Literal["all", "feasible", "none"] = "all"

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(self.budgets))
        if not self.budgets:
            raise UsageError("--budget: give at least one, e.g. --budget 150MFLOPs")
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise UsageError(f"--trials {self.n_trials!r}: must be a positive integer")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r}: unknown; choose one of {list(OBJECTIVES)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler!r}: unknown; choose one of {list(SAMPLERS)}")
        if self.proxy not in ("train", "zero-cost"):
            raise UsageError(f"--proxy {self.proxy!r}: unknown; choose train or zero-cost")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UsageError(f"--workers {self.workers!r}: must be a positive integer")
        if self.timeout_s is not None and not (self.timeout_s > 0):
            raise UsageError(f"--timeout {self.timeout_s!r}: must be a positive number of seconds")
        if self.presets not in ("all", "feasible", "none"):
            raise UsageError(f"--presets {self.presets!r}: choose all, feasible or none")


@dataclass(frozen=True)
class SearchStatus:
    """A snapshot for a live view (passed to the ``progress`` callback of :func:`search`)."""

    phase: Literal["search", "presets", "done"]
    done: int  # finished trials in the study (complete + pruned + failed)
    total: int
    running: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    infeasible: int = 0
    front: int = 0  # trials on the Pareto front
    best_accuracy: float | None = None  # best feasible objective-0 value (accuracy, or zero-cost score)
    best_cost: float | None = None  # the objective-1 value (latency ms or MFLOPs) of that trial
    message: str = ""


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` returns; :func:`nas.search.report.build_report` turns the study into tables and plots."""

    study_name: str
    storage: str
    n_trials: int
    counts: dict[str, int]
    elapsed_s: float
    presets: list[dict[str, Any]] = field(default_factory=list)


Progress = Callable[[SearchStatus], None]


# ----------------------------------------------------------------------------------------- storage
def default_storage(*, study: str, out_dir: "str | Path | None" = None) -> str:
    """The default storage URL of a study: SQLite ``<out_dir>/study.db``, ``out_dir`` = ``runs/<study>``.

    ``nas search``, ``nas report`` and ``nas export`` all resolve a missing ``--storage`` through this.
    """
    d = Path(out_dir) if out_dir is not None else Path("runs") / study
    return f"sqlite:///{d.absolute() / 'study.db'}"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _normalize_url(url: str) -> str:
    """A path becomes an SQLite URL; ``postgresql://`` uses psycopg2 when psycopg 3 is not installed
    (SQLAlchemy 2.1 defaults to psycopg 3; this project ships psycopg2-binary)."""
    if "://" not in url:
        return f"sqlite:///{Path(url).absolute()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _sqlite_path(url: str) -> Path | None:
    m = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not m or m.group(2) in ("", ":memory:"):
        return None
    return Path(m.group(2))


def _make_storage(url: str, *, create: bool) -> "optuna.storages.RDBStorage":
    """An Optuna RDB storage with a heartbeat, fast connection failure and (SQLite) WAL mode.

    Raises:
        StorageError: unreachable server, bad URL, missing SQLite file (when not ``create``).
    """
    import optuna

    url = _normalize_url(url)
    kwargs: dict[str, Any] = {}
    db = _sqlite_path(url)
    if url.startswith("sqlite"):
        if db is not None:
            if not db.exists() and not create:
                raise StorageError(f"--storage {url}: no such database file {db}; run `nas search` first or "
                                   "pass the --storage URL it used")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
                import sqlite3

                # WAL: the live view's reads do not block the workers' writes; durable across kill -9.
                with sqlite3.connect(db, timeout=SQLITE_TIMEOUT_S) as con:
                    con.execute("PRAGMA journal_mode=WAL")
            except Exception as e:  # OSError, sqlite3.Error (not an OSError): unwritable folder, not a database
                raise StorageError(f"--storage {url}: cannot open the database ({e})") from None
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif url.startswith("postgresql") or url.startswith("mysql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except Exception as e:  # SQLAlchemy/driver errors of every kind: unreachable, auth, bad URL, no driver
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise StorageError(f"--storage {_redact(url)}: cannot connect ({first})") from None


def open_study(*, study: str, storage: str | None, out_dir: "str | Path | None" = None) -> "optuna.Study":
    """Open an existing study (nothing is created).

    Args:
        study: the study name.
        storage: an Optuna storage URL or an SQLite file path; None = :func:`default_storage`.
        out_dir: the results folder the default storage lives in (default ``runs/<study>``).

    Returns:
        The loaded ``optuna.Study``.

    Raises:
        StorageError: the storage is unreachable, or has no study of that name (the message lists them).
    """
    import optuna

    url = storage or default_storage(study=study, out_dir=out_dir)
    st = _make_storage(url, create=False)
    names = [s.study_name for s in st.get_all_studies()]
    if study not in names:
        raise StorageError(f"--study {study!r}: not in {_redact(url)} (studies: {', '.join(names) or 'none'})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=study, storage=st)


class _ClaimLock:
    """Serialises "count the trials, create one" across processes and hosts for one study."""

    def __init__(self, url: str, study: str) -> None:
        self.url = _normalize_url(url)
        self.study = study
        self._fd: int | None = None
        self._conn: Any = None
        self._engine: Any = None
        digest = hashlib.sha256(f"nas-search:{study}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # pg advisory locks take a signed bigint
        self.kind = ("sqlite" if self.url.startswith("sqlite") else "postgresql" if self.url.startswith("postgres")
                     else "mysql" if self.url.startswith("mysql") else "none")

    def __enter__(self) -> "_ClaimLock":
        if self.kind == "sqlite":
            db = _sqlite_path(self.url)
            if db is not None:
                self._fd = os.open(f"{db}.claim-lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        elif self.kind in ("postgresql", "mysql"):
            import sqlalchemy as sa

            if self._engine is None:
                self._engine = sa.create_engine(self.url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
                                                poolclass=sa.pool.NullPool)
            self._conn = self._engine.connect()
            if self.kind == "postgresql":  # session lock: the server drops it when the connection dies
                self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            else:
                self._conn.execute(sa.text("SELECT GET_LOCK(:k, 3600)"), {"k": f"nas:{self._key}"})
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            import sqlalchemy as sa

            try:
                if self.kind == "postgresql":
                    self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                else:
                    self._conn.execute(sa.text("SELECT RELEASE_LOCK(:k)"), {"k": f"nas:{self._key}"})
            finally:
                self._conn.close()
                self._conn = None


# ----------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class _Figures:
    macs: int
    params: int
    latency_ms: float | None
    latency_uncertainty_ms: float | None


class _Scorer:
    """MACs, params and predicted latency of a config, and its constraint values under the budgets."""

    def __init__(self, space: "SearchSpace", table: "LatencyTable | None", budgets: Sequence[Budget],
                 objective: str) -> None:
        self.space = space
        self.table = table
        self.budgets = tuple(budgets)
        self.objective = objective
        self.num_classes = table.num_classes if table is not None else 1000
        self.mins = {k: min(v) for k, v in space.knobs().items()}

    def figures(self, config: ArchConfig) -> _Figures:
        from nas.macs import count_macs
        from nas.latency.table import predict

        m = count_macs(config, num_classes=self.num_classes)
        lat = unc = None
        if self.table is not None:
            p = predict(config, self.table)
            lat, unc = p.latency_ms, p.uncertainty_ms
        return _Figures(m.macs, m.params, lat, unc)

    def value(self, budget: Budget, f: _Figures) -> float:
        v = {"macs": f.macs, "params": f.params, "latency_ms": f.latency_ms}[budget.metric]
        if v is None:
            raise UsageError(f"--budget {budget.text}: a latency budget needs a latency table (--table)")
        return float(v)

    def slacks(self, f: _Figures) -> dict[str, float]:
        """Optuna constraint values by budget text: feasible when <= 0 (in the budget's base unit)."""
        return {b.text: b.slack(self.value(b, f)) for b in self.budgets}

    def cost(self, f: _Figures) -> float:
        """The second objective: predicted latency (ms) or MFLOPs (mult-adds, millions)."""
        return float(f.latency_ms) if self.objective == "latency" else f.macs / 1e6

    def fits(self, params: dict[str, Any]) -> bool:
        """True if the config with ``params`` set and every other knob at its smallest choice fits."""
        cfg = self.space.sample(None, fixed={**self.mins, **params})
        try:
            f = self.figures(cfg)
        except MissingEntriesError:
            return False
        return all(v <= 0 for v in self.slacks(f).values())


def _describe_violation(budget: Budget, value: float) -> str:
    unit = {"macs": (1e6, "MFLOPs"), "params": (1e6, "Mparams"), "latency_ms": (1.0, "ms")}[budget.metric]
    return f"{value / unit[0]:.4g} {unit[1]} > budget {budget.text}"


def check_budgets(space: "SearchSpace", budgets: Sequence[Budget], table: "LatencyTable | None", *,
                  objective: str = "latency") -> None:
    """Refuse budgets no network of the space meets, and latency budgets or objectives without a table.

    Raises:
        BudgetError: the space's smallest network already breaks a budget (the message gives its figure).
        UsageError: latency asked for without a table.
    """
    if table is None and (objective == "latency" or any(b.metric == "latency_ms" for b in budgets)):
        raise UsageError("--table: a latency objective or budget needs a latency table; build one with "
                         "`nas build-latency-table`, or use --objective flops with MAC/param budgets")
    sc = _Scorer(space, table, budgets, objective)
    smallest = space.smallest()
    f = sc.figures(smallest)
    for b in budgets:
        v = sc.value(b, f)
        if v > b.limit:
            raise BudgetError(f"--budget {b.text}: below the smallest network of space {space.name!r} "
                              f"({_describe_violation(b, v).split(' >')[0]}); raise the budget or use a "
                              "smaller space")


# ----------------------------------------------------------------------------------------- sampling
class BudgetGuardSampler:
    """Wraps an Optuna sampler so that every network it proposes fits the budgets (module docstring).

    Built lazily as a subclass of ``optuna.samplers.BaseSampler`` (optuna is imported only when used);
    create it with :meth:`create`.
    """

    @staticmethod
    def create(base: "optuna.samplers.BaseSampler", fits: Callable[[dict[str, Any]], bool],
               knob_names: Sequence[str], *, seed: int) -> "optuna.samplers.BaseSampler":
        """Args: ``base`` the sampler, ``fits(params)`` the budget check of a partial assignment,
        ``knob_names`` the guarded parameters in canonical order, ``seed`` of the fallback draws."""
        return _guard_class()(base, fits, tuple(knob_names), seed)


def _guard_class() -> type:
    import optuna
    from optuna.distributions import CategoricalDistribution

    class _Guard(optuna.samplers.BaseSampler):
        def __init__(self, base, fits, names, seed):
            self.base, self.fits, self.names, self.seed = base, fits, names, seed
            self._kept: dict[int, dict[str, Any]] = {}  # relative params kept per trial number

        def _rng(self, trial) -> random.Random:
            return random.Random(f"{self.seed}:{trial.number}:guard")

        def infer_relative_search_space(self, study, trial):
            return self.base.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            assigned = dict(trial.params)
            rel: dict[str, Any] = {}
            for _ in range(max(1, GUARD_TRIES // 2)):  # relative sampling is the costly kind: fewer tries
                rel = self.base.sample_relative(study, trial, search_space)
                if self.fits({**assigned, **{k: v for k, v in rel.items() if k in self.names}}):
                    self._kept[trial.number] = rel
                    return rel
            kept: dict[str, Any] = {k: v for k, v in rel.items() if k not in self.names}
            for name in self.names:  # keep what still fits, in canonical order; the rest is sampled below
                if name in rel and self.fits({**assigned, **kept, name: rel[name]}):
                    kept[name] = rel[name]
            self._kept[trial.number] = kept
            return kept

        def sample_independent(self, study, trial, param_name, param_distribution):
            if param_name not in self.names or not isinstance(param_distribution, CategoricalDistribution):
                return self.base.sample_independent(study, trial, param_name, param_distribution)
            assigned = {**self._kept.get(trial.number, {}), **trial.params}
            assigned = {k: v for k, v in assigned.items() if k in self.names}
            for _ in range(GUARD_TRIES):
                v = self.base.sample_independent(study, trial, param_name, param_distribution)
                if self.fits({**assigned, param_name: v}):
                    return v
            ok = [c for c in param_distribution.choices if self.fits({**assigned, param_name: c})]
            if not ok:  # only when fixed (enqueued) params already break a budget: the trial is infeasible
                return min(param_distribution.choices)
            return self._rng(trial).choice(ok)

        def before_trial(self, study, trial):
            self.base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._kept.pop(trial.number, None)
            self.base.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.base.reseed_rng()

    return _Guard


def _base_sampler(name: str, *, seed: int, n_trials: int) -> "optuna.samplers.BaseSampler":
    import optuna

    if name == "tpe":  # Optuna's default for multi-objective studies; constant liar spreads parallel workers
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":  # a population of a quarter of the trials (4..50): several generations even in short runs
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    return optuna.samplers.RandomSampler(seed=seed)


def _suggest_config(trial: "optuna.trial.Trial", space: "SearchSpace", *, seed: int) -> ArchConfig:
    knobs = space.knobs()
    names = list(knobs)
    random.Random(f"{seed}:{trial.number}:order").shuffle(names)  # no knob always gets the budget first
    params = {n: trial.suggest_categorical(n, list(knobs[n])) for n in names}
    return space.sample(None, fixed=params)


# ----------------------------------------------------------------------------------------- study identity
def _table_info(table: "LatencyTable | None") -> dict[str, Any] | None:
    if table is None:
        return None
    cal = table.calibration or {}
    doc = {"entries": {k: round(e.ms, 6) for k, e in sorted(table.entries.items())},
           "calibration": [cal.get("model"), cal.get("scale"), cal.get("per_block_ms")],
           "resolution": table.resolution, "num_classes": table.num_classes, "space": table.space_hash}
    fp = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return {"path": str(table.path) if table.path else None, "fingerprint": fp, "describe": table.describe(),
            "identity": table.identity, "space_hash": table.space_hash, "resolution": table.resolution,
            "num_classes": table.num_classes}


def _proxy_info(settings: SearchSettings) -> dict[str, Any]:
    s = settings.proxy_settings.to_dict()
    s.pop("threads", None)  # how many cores train a candidate does not change what it measures
    out: dict[str, Any] = {"kind": settings.proxy, "settings": s}
    if settings.proxy == "zero-cost":
        out["method"] = "naswot"
    return out


def _study_attrs(space: "SearchSpace", table: "LatencyTable | None", settings: SearchSettings) -> dict[str, Any]:
    from nas import __version__

    return {
        "space_hash": space.hash,
        "space": space.to_dict(),
        "space_name": space.name,
        "table": _table_info(table),
        "budgets": [b.text for b in settings.budgets],
        "objective": settings.objective,
        "seed": settings.seed,
        "nas_version": __version__,
        "proxy": _proxy_info(settings),
        "data": settings.data,
        "num_classes": table.num_classes if table is not None else 1000,
        "sampler": settings.sampler,
        "metric_names": ["accuracy" if settings.proxy == "train" else "score",
                         "latency_ms" if settings.objective == "latency" else "mflops"],
    }


def _check_same(name: str, stored: dict[str, Any], now: dict[str, Any]) -> None:
    from nas.units import parse_budget

    def budgets(v: list[str]) -> list[tuple[str, float]]:
        return sorted((b.metric, b.limit) for b in map(parse_budget, v))

    diffs = []
    for key in ("space_hash", "objective", "seed", "data", "num_classes"):
        if stored.get(key) != now[key]:
            diffs.append(f"{key} {stored.get(key)!r} vs {now[key]!r}")
    if budgets(stored.get("budgets") or []) != budgets(now["budgets"]):
        diffs.append(f"budgets {stored.get('budgets')} vs {now['budgets']}")
    if stored.get("proxy") != now["proxy"]:
        diffs.append("proxy settings")
    fp = lambda t: t and t.get("fingerprint")  # noqa: E731
    if fp(stored.get("table")) != fp(now["table"]):
        diffs.append("latency table")
    if diffs:
        raise UsageError(f"--study {name!r}: exists with other settings ({'; '.join(diffs)}); re-run it with "
                         "its own settings, or choose another --study")


def study_name_for(space: "SearchSpace", settings: SearchSettings, *, quick: bool = False) -> str:
    """The default study name: the same command gives the same name (so re-running resumes it)."""
    parts = [space.name, *[b.text for b in settings.budgets], settings.objective]
    if settings.proxy != "train":
        parts.append(settings.proxy)
    if quick:
        parts.append("quick")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _create_or_load(url: str, name: str, attrs: dict[str, Any]) -> None:
    """Create the study (or load it) and record/check its identity, under the claim lock."""
    import optuna

    st = _make_storage(url, create=True)
    with _ClaimLock(url, name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name=name, storage=st, directions=["maximize", "minimize"],
                                    load_if_exists=True)
        stored = study.user_attrs
        if "space_hash" in stored:
            _check_same(name, stored, attrs)
        else:
            for k, v in attrs.items():
                study.set_user_attr(k, v)
            study.set_metric_names(list(attrs["metric_names"]))


# ----------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _Job:
    """What a worker process needs (picklable)."""

    space: "SearchSpace"
    table: "LatencyTable | None"
    settings: SearchSettings
    study: str
    url: str
    threads: int
    deadline: float | None  # time.time() after which no trial is claimed
    parent_pid: int | None = None


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return fields[19]  # starttime (clock ticks since boot): tells a reused pid from the original


def _worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid()) or '?'}"


def _is_dead(tag: str) -> bool:
    """True if ``tag`` names a process on this host that no longer exists."""
    host, _, rest = tag.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    now = _proc_start(int(pid_s))
    if now is None:  # no such process, or a zombie (exited, not yet reaped)
        return Path("/proc").is_dir() or not _pid_alive(int(pid_s))
    return start not in ("?", now)  # the pid now belongs to another process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_stale(study: "optuna.Study", storage: Any) -> int:
    """Fail RUNNING trials whose worker is gone; returns how many (called under the claim lock)."""
    import optuna
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = t.user_attrs.get("worker")
        # Without a worker tag the trial's claimer died between ask() and tagging, both done under this lock.
        if tag is None or _is_dead(str(tag)):
            try:
                storage.set_trial_user_attr(t._trial_id, "failure", f"worker {tag or '?'} died while running it")
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                n += 1
            except Exception:  # finished meanwhile by its worker: nothing to do
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # heartbeat-less trials of workers on other hosts
    return n


class _Heartbeat:
    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10**7):  # bounded: ~3 years at HEARTBEAT_S
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a transient storage error must not kill the trial
                pass
            if self.stop_event.wait(HEARTBEAT_S):
                return

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


def _set_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        trial.set_user_attr(k, v)


class _Worker:
    def __init__(self, job: _Job, *, index: int, on_trial: Callable[[], None] | None = None) -> None:
        import optuna

        self.job, self.s = job, job.settings
        self.storage = _make_storage(job.url, create=False)
        existing = len(self.storage.get_all_trials(self.storage.get_study_id_from_name(job.study), deepcopy=False))
        # Differs per worker and per resumed run, so a resumed run does not replay the same random draws.
        sampler_seed = random.Random(f"{self.s.seed}:{index}:{existing}").randrange(2**31)
        self.scorer = _Scorer(job.space, job.table, self.s.budgets, self.s.objective)
        base = _base_sampler(self.s.sampler, seed=sampler_seed, n_trials=self.s.n_trials)
        sampler = BudgetGuardSampler.create(base, self.scorer.fits, list(job.space.knobs()), seed=self.s.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study = optuna.load_study(study_name=job.study, storage=self.storage, sampler=sampler)
        self.lock = _ClaimLock(job.url, job.study)
        self.tag = _worker_tag()
        self.on_trial = on_trial
        self.dataset = None

    def _claim(self) -> "optuna.trial.Trial | None":
        from optuna.trial import TrialState

        with self.lock:
            _fail_stale(self.study, self.storage)
            taken = [t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
            if len(taken) >= self.s.n_trials:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize": we beat
                trial = self.study.ask()
            trial.set_user_attr("worker", self.tag)
        return trial

    def run(self, *, barrier: Any = None) -> int:
        import torch

        torch.set_num_threads(self.job.threads)
        if barrier is not None:  # local workers start claiming together, each with its data loaded
            self._data()
            try:
                barrier.wait(timeout=300)
            except Exception:  # a sibling failed to start: go on alone
                pass
        ran = 0
        for _ in range(self.s.n_trials):  # each pass claims one of at most n_trials trials, or stops
            if self.job.deadline is not None and time.time() >= self.job.deadline:
                break
            if self.job.parent_pid is not None and os.getppid() != self.job.parent_pid:
                break  # the `nas search` that started this worker is gone: stop claiming
            trial = self._claim()
            if trial is None:
                break
            self._run_trial(trial)
            ran += 1
            if self.on_trial is not None:
                self.on_trial()
        return ran

    def _data(self):
        if self.dataset is None:
            from nas.training.data import load_data

            self.dataset = load_data(self.s.data, image_size=self.s.proxy_settings.resolution)
        return self.dataset

    def _run_trial(self, trial: "optuna.trial.Trial") -> None:
        from optuna.trial import TrialState

        from nas.training.proxy import proxy_train, zero_cost_score

        t0 = time.perf_counter()
        s = self.s
        with _Heartbeat(self.storage, trial._trial_id):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. TPE's "sampled independently" when the guard drops a knob
                    config = _suggest_config(trial, self.job.space, seed=s.seed)
                f = self.scorer.figures(config)
                cost = self.scorer.cost(f)
                slacks = self.scorer.slacks(f)
                for name, v in slacks.items():
                    trial.set_constraint(name, v)
                feasible = all(v <= 0 for v in slacks.values())
                _set_attrs(trial, {"config": config.to_dict(), "config_string": config.to_string(),
                                   "macs": f.macs, "mflops": round(f.macs / 1e6, 3), "params": f.params,
                                   "latency_ms": f.latency_ms, "latency_uncertainty_ms": f.latency_uncertainty_ms,
                                   "seed": s.seed, "feasible": feasible})
                if not feasible:  # recorded before any training is spent on it
                    why = "; ".join(_describe_violation(b, self.scorer.value(b, f)) for b in s.budgets
                                    if slacks[b.text] > 0)
                    _set_attrs(trial, {"infeasible": why, "accuracy": 0.0, "trained": False,
                                       "duration_s": round(time.perf_counter() - t0, 4)})
                    self.study.tell(trial, [0.0, cost])
                    return
                if s.proxy == "zero-cost":
                    score = zero_cost_score(config, data=self._data(), settings=s.proxy_settings, seed=s.seed)
                    score = score if math.isfinite(score) else 0.0
                    _set_attrs(trial, {"score": score, "accuracy": None, "trained": False,
                                       "duration_s": round(time.perf_counter() - t0, 3)})
                    self.study.tell(trial, [score, cost])
                    return
                history: list[list[float]] = []
                cb = self._pruner(cost, history) if s.prune else (lambda step, acc: history.append([step, acc]))
                r = proxy_train(config, data=self._data(), settings=s.proxy_settings, seed=s.seed, callback=cb,
                                device=s.device)
                _set_attrs(trial, {"accuracy": r.accuracy, "history": [list(h) for h in r.history],
                                   "steps": r.steps, "total_steps": r.total_steps, "pruned": r.pruned,
                                   "trained": True, "train_s": round(r.train_seconds, 3),
                                   "duration_s": round(time.perf_counter() - t0, 3)})
                if r.pruned:
                    self.study.tell(trial, state=TrialState.PRUNED)
                else:
                    self.study.tell(trial, [r.accuracy, cost])
            except TrainingDivergedError as e:  # recorded failed; the search goes on
                self._fail(trial, str(e), t0)
            except KeyboardInterrupt:
                self._fail(trial, "interrupted (Ctrl-C)", t0)
                raise
            except NasError as e:  # e.g. the data set cannot be read: every trial would fail the same way
                self._fail(trial, str(e), t0)
                raise
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory for this one candidate
                self._fail(trial, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", t0)

    def _fail(self, trial: Any, why: str, t0: float) -> None:
        from optuna.trial import TrialState

        try:
            _set_attrs(trial, {"failure": why, "duration_s": round(time.perf_counter() - t0, 3)})
        finally:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def _pruner(self, cost: float, history: list[list[float]]) -> Callable[[int, float], bool]:
        """Stop when enough completed, no-slower trials had a higher median accuracy at this step."""
        from optuna.trial import TrialState

        def cb(step: int, acc: float) -> bool:
            history.append([step, acc])
            peers = []
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if not t.user_attrs.get("feasible") or t.values is None or t.values[1] > cost:
                    continue
                at = {int(h[0]): float(h[1]) for h in t.user_attrs.get("history") or []}
                if step in at:
                    peers.append(at[step])
            if len(peers) >= PRUNE_MIN_PEERS and acc < statistics.median(peers):
                return True  # proxy_train ignores a stop at its last report: the run completes normally
            return False

        return cb


def _worker_main(job: _Job, index: int, barrier: Any = None) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn)."""
    try:
        _Worker(job, index=index).run(barrier=barrier)
    except KeyboardInterrupt:
        pass


# ----------------------------------------------------------------------------------------- the search
def _status(study: "optuna.Study", total: int, phase: str = "search", message: str = "") -> SearchStatus:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by = {s: 0 for s in TrialState}
    for t in trials:
        by[t.state] += 1
    infeasible = sum(1 for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible") is False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        front = study.best_trials
    best = max(front, key=lambda t: (t.values[0], -t.values[1]), default=None)
    return SearchStatus(phase=phase, done=by[TrialState.COMPLETE] + by[TrialState.PRUNED] + by[TrialState.FAIL],
                        total=total, running=by[TrialState.RUNNING], complete=by[TrialState.COMPLETE] - infeasible,
                        pruned=by[TrialState.PRUNED], failed=by[TrialState.FAIL], infeasible=infeasible,
                        front=len(front), best_accuracy=best.values[0] if best else None,
                        best_cost=best.values[1] if best else None, message=message)


def search(space: "SearchSpace", *, settings: SearchSettings, study: str, table: "LatencyTable | None" = None,
           storage: str | None = None, out_dir: "str | Path | None" = None, threads: int | None = None,
           progress: Progress | None = None) -> SearchResult:
    """Run (or resume, or join) a search until the study holds ``settings.n_trials`` trials.

    Args:
        space: the search space.
        settings: budgets, trial count, objective, sampler, proxy (see :class:`SearchSettings`).
        study: the study name; re-using it resumes (settings must match).
        table: the latency table of ``space`` (required for the latency objective or a latency budget).
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``) or an SQLite path;
            None = :func:`default_storage` under ``out_dir``.
        out_dir: the results folder (default ``runs/<study>``).
        threads: torch threads per worker (default 1; see the comment in the code: use workers for cores).
        progress: called with a :class:`SearchStatus` after each trial (one worker) or about once a
            second (several), and while presets are scored.

    Returns:
        A :class:`SearchResult`; the study itself holds every trial and its attributes.

    Raises:
        BudgetError: a budget below the space's smallest network.
        UsageError: latency asked for without a table, a study made with other settings, bad settings.
        StorageError: the storage cannot be reached.
        TableMismatchError: the table belongs to another space or resolution.
        DataError: the data cannot be loaded.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if table is not None:
        table.check_space(space)
        if tuple(space.resolution) != (table.resolution,):
            raise UsageError(f"--table: measured at {table.resolution}px but the space offers resolutions "
                             f"{list(space.resolution)}; use a space with resolution = [{table.resolution}]")
    check_budgets(space, settings.budgets, table, objective=settings.objective)
    url = storage or default_storage(study=study, out_dir=out_dir)
    attrs = _study_attrs(space, table, settings)
    _create_or_load(url, study, attrs)
    start = time.time()
    deadline = start + settings.timeout_s if settings.timeout_s else None
    # One torch thread per worker by default: oneDNN's threads spin-wait at every barrier, and with other
    # processes on the cores a 40-step proxy run of ShuffleNetV2 1x took 310 s at 2 threads vs 21-28 s at 1
    # (2-core VM under load). More cores are used with more workers, which are immune to that.
    threads = threads or 1
    job = _Job(space=space, table=table, settings=settings, study=study, url=url, threads=threads,
               deadline=deadline)
    view = open_study(study=study, storage=url)

    def report(phase: str = "search", message: str = "") -> None:
        if progress is not None:
            progress(_status(view, settings.n_trials, phase, message))

    report()
    if settings.workers == 1:
        _Worker(job, index=0, on_trial=report).run()
    else:
        _run_processes(job, settings.workers, report)
    presets = score_presets(view, space=space, table=table, settings=settings, threads=threads,
                            progress=lambda msg: report("presets", msg))
    report("done")
    st = _status(view, settings.n_trials)
    counts = {"complete": st.complete, "infeasible": st.infeasible, "pruned": st.pruned, "failed": st.failed,
              "running": st.running}
    return SearchResult(study_name=study, storage=url, n_trials=settings.n_trials, counts=counts,
                        elapsed_s=time.time() - start, presets=presets)


def _run_processes(job: _Job, workers: int, report: Callable[[], None]) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after torch/optuna/SQLAlchemy have started threads is unsafe
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_worker_main, args=(_with_parent(job), i, barrier), daemon=False)
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for _ in range(10**7):  # bounded poll: ends when every worker has exited
            if all(not p.is_alive() for p in procs):
                break
            report()
            for p in procs:
                p.join(timeout=1.0 / workers)
    except KeyboardInterrupt:  # the workers got the same SIGINT: each fails its trial and exits
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        for p in procs:
            if p.is_alive():  # pragma: no cover - only after an interrupt that a worker ignored
                p.terminate()
                p.join(timeout=5)


def _with_parent(job: _Job) -> _Job:
    from dataclasses import replace

    return replace(job, parent_pid=os.getpid())


# ----------------------------------------------------------------------------------------- presets
def evaluate_config(config: ArchConfig, *, space: "SearchSpace", table: "LatencyTable | None",
                    settings: SearchSettings, train: bool, dataset: Any = None) -> dict[str, Any]:
    """Score one network the way the search scores a trial (figures, feasibility, proxy accuracy).

    Args:
        config: the network (at the table's resolution).
        space, table, settings: as for :func:`search`.
        train: run the proxy (else ``accuracy`` is None).
        dataset: a loaded :class:`~nas.training.data.Dataset` to reuse (default: loaded from ``settings.data``).

    Returns:
        A dict with ``config``, ``macs``, ``mflops``, ``params``, ``latency_ms``, ``latency_uncertainty_ms``,
        ``feasible``, ``violations`` (list of texts), ``accuracy`` (or ``score`` for the zero-cost proxy),
        ``in_space`` and ``duration_s``.
    """
    from nas.training.proxy import proxy_train, zero_cost_score

    t0 = time.perf_counter()
    sc = _Scorer(space, table, settings.budgets, settings.objective)
    try:
        f = sc.figures(config)
    except MissingEntriesError:  # a preset outside the space: no table entries for its blocks
        from nas.macs import count_macs

        m = count_macs(config, num_classes=sc.num_classes)
        f = _Figures(m.macs, m.params, None, None)
    violations = []
    for b in settings.budgets:
        v = {"macs": f.macs, "params": f.params, "latency_ms": f.latency_ms}[b.metric]
        if v is None or v > b.limit:
            violations.append(_describe_violation(b, v) if v is not None else f"no latency for {b.text}")
    out: dict[str, Any] = {"config": config.to_dict(), "macs": f.macs, "mflops": round(f.macs / 1e6, 3),
                           "params": f.params, "latency_ms": f.latency_ms,
                           "latency_uncertainty_ms": f.latency_uncertainty_ms, "feasible": not violations,
                           "violations": violations, "in_space": space.contains(config), "accuracy": None}
    if train:
        if dataset is None:
            from nas.training.data import load_data

            dataset = load_data(settings.data, image_size=settings.proxy_settings.resolution)
        if settings.proxy == "zero-cost":
            out["score"] = zero_cost_score(config, data=dataset, settings=settings.proxy_settings, seed=settings.seed)
        else:
            try:
                r = proxy_train(config, data=dataset, settings=settings.proxy_settings, seed=settings.seed,
                                device=settings.device)
                out["accuracy"] = r.accuracy
            except TrainingDivergedError as e:
                out["failure"] = str(e)
    out["duration_s"] = round(time.perf_counter() - t0, 3)
    return out


def score_presets(study: "optuna.Study", *, space: "SearchSpace", table: "LatencyTable | None",
                  settings: SearchSettings, threads: int | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Score the paper's ShuffleNetV2 presets like the trials, cached in the study (attribute ``presets``).

    A preset is trained once per study (a resumed or joined run reuses the stored score); which presets are
    trained follows ``settings.presets``. Returns one dict per preset (see :func:`evaluate_config`) plus
    ``name``.
    """
    import torch

    cache: dict[str, Any] = dict(study.user_attrs.get("presets") or {})
    resolution = table.resolution if table is not None else space.resolution[0]
    out = []
    dataset = None
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for name, p in PRESETS.items():
            cfg = p.with_resolution(resolution)
            want = settings.presets == "all"
            row = evaluate_config(cfg, space=space, table=table, settings=settings, train=False)
            want = want or (settings.presets == "feasible" and row["feasible"])
            cached = cache.get(name) or {}
            scored = any(cached.get(k) is not None for k in ("accuracy", "score", "failure"))
            if scored:  # trained by an earlier or another run of this study: reuse, never retrain
                row = {**row, **{k: cached[k] for k in ("accuracy", "score", "failure", "duration_s") if k in cached}}
            elif want:
                if progress:
                    progress(f"training preset {name} for reference")
                if dataset is None:
                    from nas.training.data import load_data

                    dataset = load_data(settings.data, image_size=settings.proxy_settings.resolution)
                row = evaluate_config(cfg, space=space, table=table, settings=settings, train=True, dataset=dataset)
            row = {"name": name, **row}
            if row != cached:
                cache[name] = row
                study.set_user_attr("presets", cache)  # after each: an interrupted run keeps what it finished
            out.append(row)
    finally:
        torch.set_num_threads(old)
    return out
