"""Search spaces: a declarative TOML file of choices -> :class:`SearchSpace`.

See ``search_spaces/shufflenetv2.toml`` for the commented default. Top-level keys: ``name`` (string),
``resolution``, ``stem_channels``, ``head_channels`` (lists of positive ints), ``residual``, ``extra_dw``
(lists of bools), and one ``[[stages]]`` table per stage with ``depth``, ``width`` (ints), ``split_ratio``
(floats in (0, 1)), ``se`` (bools) and ``kernel`` (3, 5 or 7). Every combination of choices must be a valid
:class:`~nas.arch.ArchConfig`; the loader checks that, so sampling never produces an invalid network.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from nas.arch import KERNELS, ArchConfig, BlockKey, StageConfig, conv_out
from nas.errors import ConfigError, SpaceError

__all__ = ["SearchSpace", "StageSpace", "load_space", "default_space_path", "DEFAULT_SPACE"]

DEFAULT_SPACE = "shufflenetv2"

_TOP_KEYS = {
    "name": str,
    "resolution": int,
    "stem_channels": int,
    "head_channels": int,
    "residual": bool,
    "extra_dw": bool,
    "stages": list,
}
_STAGE_KEYS = {"depth": int, "width": int, "split_ratio": float, "se": bool, "kernel": int}
_REQUIRED_TOP = ("name", "resolution", "stem_channels", "head_channels", "stages")


@dataclass(frozen=True)
class StageSpace:
    depth: tuple[int, ...]
    width: tuple[int, ...]
    split_ratio: tuple[float, ...]
    se: tuple[bool, ...]
    kernel: tuple[int, ...]


@dataclass(frozen=True)
class SearchSpace:
    """The choices of every knob. Build with :func:`load_space`."""

    name: str
    resolution: tuple[int, ...]
    stem_channels: tuple[int, ...]
    head_channels: tuple[int, ...]
    stages: tuple[StageSpace, ...]
    residual: tuple[bool, ...] = (False,)
    extra_dw: tuple[bool, ...] = (False,)
    source: str = ""  # where it was loaded from (not part of the hash)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resolution": list(self.resolution),
            "stem_channels": list(self.stem_channels),
            "head_channels": list(self.head_channels),
            "residual": list(self.residual),
            "extra_dw": list(self.extra_dw),
            "stages": [
                {k: list(getattr(s, k)) for k in _STAGE_KEYS} for s in self.stages
            ],
        }

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical choices (comments, key order and file path do not matter)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    # ------------------------------------------------------------------ size
    def knobs(self) -> dict[str, tuple]:
        """Every knob with its choices, named as the Optuna parameters are (``s1_width`` ...)."""
        out: dict[str, tuple] = {
            "resolution": self.resolution,
            "stem_channels": self.stem_channels,
            "head_channels": self.head_channels,
            "residual": self.residual,
            "extra_dw": self.extra_dw,
        }
        for i, s in enumerate(self.stages, 1):
            for k in _STAGE_KEYS:
                out[f"s{i}_{k}"] = getattr(s, k)
        return out

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return math.prod(len(v) for v in self.knobs().values())

    def _from_params(self, p: dict[str, Any]) -> ArchConfig:
        stages = tuple(
            StageConfig(depth=p[f"s{i}_depth"], width=p[f"s{i}_width"], split_ratio=p[f"s{i}_split_ratio"],
                        se=p[f"s{i}_se"], kernel=p[f"s{i}_kernel"])
            for i in range(1, len(self.stages) + 1)
        )
        return ArchConfig(stages=stages, stem_channels=p["stem_channels"], head_channels=p["head_channels"],
                          resolution=p["resolution"], residual=p["residual"], extra_dw=p["extra_dw"])

    def smallest(self) -> ArchConfig:
        """The config with every knob at its smallest choice (the fewest MACs, params and, in practice, latency)."""
        return self._from_params({k: min(v) for k, v in self.knobs().items()})

    def largest(self) -> ArchConfig:
        return self._from_params({k: max(v) for k, v in self.knobs().items()})

    # ------------------------------------------------------------------ sampling
    def sample(self, source: Any, *, fixed: dict[str, Any] | None = None) -> ArchConfig:
        """One config. ``source`` is an Optuna trial (``suggest_categorical`` per knob, named as in
        :meth:`knobs`) or a ``random.Random``/``numpy.random.Generator`` for uniform sampling.
        ``fixed`` pins knobs (e.g. ``{"resolution": 224}``)."""
        fixed = fixed or {}
        params: dict[str, Any] = {}
        for name, choices in self.knobs().items():
            if name in fixed:
                params[name] = fixed[name]
            elif hasattr(source, "suggest_categorical"):
                params[name] = source.suggest_categorical(name, list(choices))
            elif hasattr(source, "integers"):  # numpy Generator
                params[name] = choices[int(source.integers(len(choices)))]
            else:  # random.Random
                params[name] = choices[source.randrange(len(choices))]
        return self._from_params(params)

    def contains(self, config: ArchConfig) -> bool:
        """True if every knob of ``config`` is one of this space's choices."""
        if len(config.stages) != len(self.stages):
            return False
        p = self.params_of(config)
        return all(p[k] in v for k, v in self.knobs().items())

    def params_of(self, config: ArchConfig) -> dict[str, Any]:
        """The Optuna parameter dict that :meth:`sample` would have produced for ``config``."""
        p: dict[str, Any] = {
            "resolution": config.resolution, "stem_channels": config.stem_channels,
            "head_channels": config.head_channels, "residual": config.residual, "extra_dw": config.extra_dw,
        }
        for i, s in enumerate(config.stages, 1):
            for k in _STAGE_KEYS:
                p[f"s{i}_{k}"] = getattr(s, k)
        return p

    # ------------------------------------------------------------------ blocks
    def enumerate_blocks(self, *, resolution: int | None = None) -> list[BlockKey]:
        """Every distinct block any config of the space can contain at ``resolution`` (default: each
        resolution choice), in a stable order: stems, then per stage down units and basic units, then heads."""
        resolutions = (resolution,) if resolution is not None else self.resolution
        keys: dict[str, BlockKey] = {}

        def add(k: BlockKey) -> None:
            keys.setdefault(k.id, k)

        for res in resolutions:
            for stem_c in self.stem_channels:
                add(BlockKey("stem", res, 3, stem_c))
            r = conv_out(conv_out(res))
            prev_widths = self.stem_channels
            for st in self.stages:
                for cin, cout, k, se, dw in itertools.product(prev_widths, st.width, st.kernel, st.se, self.extra_dw):
                    add(BlockKey("down", r, cin, cout, se=se, kernel=k, extra_dw=dw))
                r = conv_out(r)
                if max(st.depth) > 1:
                    for c, sr, k, se, res_, dw in itertools.product(st.width, st.split_ratio, st.kernel, st.se,
                                                                    self.residual, self.extra_dw):
                        add(BlockKey("basic", r, c, c, split_ratio=float(sr), se=se, kernel=k, residual=res_,
                                     extra_dw=dw))
                prev_widths = st.width
            for cin, h in itertools.product(prev_widths, self.head_channels):
                add(BlockKey("head", r, cin, h))
        return list(keys.values())


# ---------------------------------------------------------------------- loading
def default_space_path() -> Path:
    """The default space file shipped with the package (``search_spaces/shufflenetv2.toml``)."""
    return Path(str(resources.files("nas.search_spaces").joinpath(f"{DEFAULT_SPACE}.toml")))


def _check_list(where: str, value: Any, typ: type) -> tuple:
    if not isinstance(value, list):
        raise SpaceError(f"{where}: must be a list of choices, e.g. [{'1' if typ is not bool else 'false'}]",
            field=where)
    if not value:
        raise SpaceError(f"{where}: empty list; give at least one choice", field=where)
    out = []
    for v in value:
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if typ is int and isinstance(v, bool) or not isinstance(v, typ):
            raise SpaceError(f"{where}: choice {v!r} is {type(v).__name__}, expected {typ.__name__}", field=where)
        out.append(v)
    if len(set(out)) != len(out):
        raise SpaceError(f"{where}: duplicate choices {out}", field=where)
    return tuple(sorted(out))


def space_from_dict(d: dict[str, Any], *, source: str = "") -> SearchSpace:
    """Validate a parsed space document and build the :class:`SearchSpace`."""
    for k in d:
        if k not in _TOP_KEYS:
            raise SpaceError(f"{source}: unknown key {k!r}; expected one of {sorted(_TOP_KEYS)}", field=k)
    for k in _REQUIRED_TOP:
        if k not in d:
            raise SpaceError(f"{source}: missing key {k!r}", field=k)
    if not isinstance(d["name"], str) or not d["name"]:
        raise SpaceError(f"{source}: key 'name' must be a non-empty string", field="name")
    top = {k: _check_list(f"{source}: key {k!r}", d[k], _TOP_KEYS[k])
           for k in ("resolution", "stem_channels", "head_channels")}
    for k in ("residual", "extra_dw"):
        top[k] = _check_list(f"{source}: key {k!r}", d.get(k, [False]), bool)
    if not isinstance(d["stages"], list) or not d["stages"]:
        raise SpaceError(f"{source}: key 'stages' must be one or more [[stages]] tables", field="stages")
    stages = []
    for i, st in enumerate(d["stages"]):
        where = f"{source}: stages[{i}]"
        if not isinstance(st, dict):
            raise SpaceError(f"{where}: must be a table with keys {sorted(_STAGE_KEYS)}", field=where)
        for k in st:
            if k not in _STAGE_KEYS:
                raise SpaceError(f"{where}: unknown key {k!r}; expected {sorted(_STAGE_KEYS)}", field=where)
        for k in _STAGE_KEYS:
            if k not in st:
                raise SpaceError(f"{where}: missing key {k!r}", field=where)
        stages.append(StageSpace(**{k: _check_list(f"{where}.{k}", st[k], t) for k, t in _STAGE_KEYS.items()}))
    space = SearchSpace(name=d["name"], stages=tuple(stages), source=source, **top)
    _check_all_valid(space, source)
    return space


def _check_all_valid(space: SearchSpace, source: str) -> None:
    """Every combination must build: checking each knob's extremes and every width x ratio covers all rules."""
    for i, st in enumerate(space.stages):
        where = f"{source}: stages[{i}]"
        for k in st.kernel:
            if k not in KERNELS:
                raise SpaceError(f"{where}.kernel: {k} is not one of {list(KERNELS)}", field=where)
        for w, r in itertools.product(st.width, st.split_ratio):
            try:
                StageConfig(depth=min(st.depth), width=w, split_ratio=r, kernel=min(st.kernel), se=False)
                ArchConfig(stages=(StageConfig(depth=1, width=w, split_ratio=r),))
            except ConfigError as e:
                raise SpaceError(f"{where}: width {w} with split_ratio {r:g} is invalid: {e}", field=where) from None
        if min(st.depth) < 1:
            raise SpaceError(f"{where}.depth: {min(st.depth)} must be at least 1", field=where)
    for cfg in (space.smallest, space.largest):
        try:
            cfg()
        except ConfigError as e:
            raise SpaceError(f"{source}: {e}", field=e.field) from None


def load_space(path: "str | Path | None" = None) -> SearchSpace:
    """Load and validate a space file (default: the shipped ``shufflenetv2.toml``).

    ``path`` may also be the bare name of a shipped space (``"shufflenetv2"``).

    Raises:
        SpaceError: missing file, bad TOML, or a missing/unknown/wrong-typed key (the message names it).
    """
    if path is None or (isinstance(path, str) and "/" not in path and not path.endswith(".toml")):
        name = path or DEFAULT_SPACE
        p = Path(str(resources.files("nas.search_spaces").joinpath(f"{name}.toml")))
        if not p.is_file():
            raise SpaceError(f"space {name!r}: no such shipped space; pass a path to a .toml file", field="space")
    else:
        p = Path(path)
    if not p.is_file():
        raise SpaceError(f"{p}: space file not found", field="space")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{p}: not valid TOML ({e})", field="space") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"{p}: cannot read ({e})", field="space") from None
    return space_from_dict(doc, source=str(p))
