"""The architecture config: one frozen type that describes a concrete network.

A trial samples an :class:`ArchConfig`; export writes it; :func:`nas.build_model` builds it. JSON is a
codec tested both ways (``ArchConfig.from_json(a.to_json()) == a``), and :meth:`ArchConfig.hash` is a
stable content hash of that canonical JSON.

Channel rules (checked by :meth:`ArchConfig.validate`, each failure names the field):

* every stage width is even: a down-sampling unit gives half its outputs to each branch, and the
  channel shuffle interleaves two equal halves;
* ``width * split_ratio`` is a whole number of at least 1: that many channels go through the branch
  of a basic unit, the rest pass unchanged;
* ``0 < split_ratio < 1``; ``kernel`` in {3, 5, 7}; ``depth >= 1``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from nas.errors import ConfigError

__all__ = [
    "ArchConfig",
    "StageConfig",
    "BlockKey",
    "PRESETS",
    "preset",
    "load_config",
    "conv_out",
]

KERNELS = (3, 5, 7)
SE_REDUCTION = 4  # SE bottleneck = channels // 4, as in MobileNetV3/ShuffleNetV2+ (paper: "SE" variants)


def conv_out(size: int, stride: int = 2) -> int:
    """Spatial size after a stride-2 conv/pool with 'same' padding and an odd kernel (torch semantics)."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class StageConfig:
    """One stage: a down-sampling unit followed by ``depth - 1`` basic units, all ``width`` channels out."""

    depth: int
    width: int
    split_ratio: float = 0.5  # fraction of channels through the branch of a basic unit (paper: 0.5)
    se: bool = False
    kernel: int = 3  # depthwise kernel size

    def branch_channels(self) -> int:
        """Channels that go through the branch of a basic unit of this stage."""
        return int(round(self.width * self.split_ratio))


@dataclass(frozen=True)
class BlockKey:
    """One measurable block: what a latency-table entry is keyed by.

    ``kind`` is ``stem`` (3x3 conv s2 + BN + ReLU + 3x3 max-pool s2), ``down`` (down-sampling unit,
    stride 2, no split), ``basic`` (split unit, stride 1) or ``head`` (1x1 conv-BN-ReLU, global pool, FC).
    ``resolution`` is the block's *input* spatial size. For ``head``, ``out_channels`` is the conv5
    width (the FC's class count belongs to the table's identity).
    """

    kind: Literal["stem", "down", "basic", "head"]
    resolution: int
    in_channels: int
    out_channels: int
    split_ratio: float = 0.5
    se: bool = False
    kernel: int = 3
    residual: bool = False
    extra_dw: bool = False

    @property
    def id(self) -> str:
        """Stable, readable table key, e.g. ``basic_r28_i116_o116_s0.5_k3_se0_res0_dw0``."""
        if self.kind in ("stem", "head"):
            return f"{self.kind}_r{self.resolution}_i{self.in_channels}_o{self.out_channels}"
        split = f"_s{self.split_ratio:g}" if self.kind == "basic" else ""
        return (
            f"{self.kind}_r{self.resolution}_i{self.in_channels}_o{self.out_channels}{split}"
            f"_k{self.kernel}_se{int(self.se)}_res{int(self.residual and self.kind == 'basic')}_dw{int(self.extra_dw)}"
        )

    @property
    def out_resolution(self) -> int:
        if self.kind == "stem":
            return conv_out(conv_out(self.resolution))
        if self.kind == "down":
            return conv_out(self.resolution)
        if self.kind == "head":
            return 1
        return self.resolution

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BlockKey":
        return cls(**dict(d))


@dataclass(frozen=True)
class ArchConfig:
    """A concrete ShuffleNetV2-style network.

    Attributes:
        stages: three (or more) stages, see :class:`StageConfig`.
        stem_channels: output channels of the 3x3 stride-2 stem conv.
        head_channels: output channels of the final 1x1 conv ("conv5").
        resolution: square input size in pixels that latency and MACs refer to.
        residual: add the branch input to the branch output in basic units (paper, for large/deep nets).
        extra_dw: ShuffleNetV2*: an extra 3x3 depthwise conv before the first 1x1 of each branch.
    """

    stages: tuple[StageConfig, ...]
    stem_channels: int = 24
    head_channels: int = 1024
    resolution: int = 224
    residual: bool = False
    extra_dw: bool = False
    name: str = field(default="", compare=False)  # a label only: not part of equality or the hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        self.validate()

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        for fname in ("stem_channels", "head_channels", "resolution"):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{fname}={v!r}: must be a positive integer", field=fname)
        if self.resolution < 8:
            raise ConfigError(f"resolution={self.resolution}: must be at least 8 pixels", field="resolution")
        if not self.stages:
            raise ConfigError("stages: at least one stage is required", field="stages")
        for i, st in enumerate(self.stages):
            where = f"stages[{i}]"
            if not isinstance(st, StageConfig):
                raise ConfigError(f"{where}: expected a stage object, got {type(st).__name__}", field=where)
            for fname in ("depth", "width", "kernel"):
                v = getattr(st, fname)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"{where}.{fname}={v!r}: must be a positive integer", field=f"{where}.{fname}")
            if st.width % 2:
                raise ConfigError(
                    f"{where}.width={st.width}: must be even (the down-sampling unit and the channel shuffle "
                    "split channels in two halves)", field=f"{where}.width")
            r = st.split_ratio
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 < float(r) < 1.0):
                raise ConfigError(f"{where}.split_ratio={r!r}: must be strictly between 0 and 1 (paper: 0.5)",
                                  field=f"{where}.split_ratio")
            branch = st.width * float(r)
            if abs(branch - round(branch)) > 1e-6 or round(branch) < 1:
                raise ConfigError(
                    f"{where}.split_ratio={r:g}: width {st.width} x {r:g} = {branch:g} channels is not a whole "
                    "number; pick a width divisible by the ratio's denominator", field=f"{where}.split_ratio")
            if st.kernel not in KERNELS:
                raise ConfigError(f"{where}.kernel={st.kernel}: must be one of {list(KERNELS)}",
                    field=f"{where}.kernel")
            if not isinstance(st.se, bool):
                raise ConfigError(f"{where}.se={st.se!r}: must be true or false", field=f"{where}.se")
        for fname in ("residual", "extra_dw"):
            if not isinstance(getattr(self, fname), bool):
                raise ConfigError(f"{fname}={getattr(self, fname)!r}: must be true or false", field=fname)

    # ----------------------------------------------------------------- structure
    def blocks(self) -> list[BlockKey]:
        """Every block of the network in order: stem, units, head (what the latency table sums)."""
        res = self.resolution
        out = [BlockKey("stem", res, 3, self.stem_channels)]
        res = out[0].out_resolution
        cin = self.stem_channels
        for st in self.stages:
            common = dict(se=st.se, kernel=st.kernel, extra_dw=self.extra_dw)
            out.append(BlockKey("down", res, cin, st.width, **common))
            res = conv_out(res)
            for _ in range(st.depth - 1):
                out.append(
                    BlockKey("basic", res, st.width, st.width, split_ratio=float(st.split_ratio),
                             residual=self.residual, **common)
                )
            cin = st.width
        out.append(BlockKey("head", res, cin, self.head_channels))
        return out

    # ----------------------------------------------------------------- codecs
    def to_dict(self) -> dict[str, Any]:
        d = {
            "resolution": self.resolution,
            "stem_channels": self.stem_channels,
            "stages": [
                {"depth": s.depth, "width": s.width, "split_ratio": float(s.split_ratio), "se": s.se,
                 "kernel": s.kernel}
                for s in self.stages
            ],
            "head_channels": self.head_channels,
            "residual": self.residual,
            "extra_dw": self.extra_dw,
        }
        if self.name:
            d["name"] = self.name
        return d

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchConfig":
        """Build from the JSON object form. Extra keys (provenance written by export) are ignored
        only under ``"provenance"``; any other unknown key is an error that names it."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}", field="config")
        if "config" in d and isinstance(d["config"], Mapping):  # an export file: config + provenance
            d = d["config"]
        known = {"resolution", "stem_channels", "stages", "head_channels", "residual", "extra_dw", "name",
                 "provenance"}
        for k in d:
            if k not in known:
                raise ConfigError(f"config key {k!r}: unknown; expected one of {sorted(known - {'provenance'})}",
                                  field=k)
        if "stages" not in d:
            raise ConfigError("config key 'stages': missing", field="stages")
        if not isinstance(d["stages"], list):
            raise ConfigError("stages: must be a list of stage objects", field="stages")
        stages = []
        stage_keys = {"depth", "width", "split_ratio", "se", "kernel"}
        for i, s in enumerate(d["stages"]):
            if not isinstance(s, Mapping):
                raise ConfigError(f"stages[{i}]: must be an object with keys {sorted(stage_keys)}",
                    field=f"stages[{i}]")
            for k in s:
                if k not in stage_keys:
                    raise ConfigError(f"stages[{i}].{k}: unknown key; expected {sorted(stage_keys)}",
                        field=f"stages[{i}].{k}")
            for k in ("depth", "width"):
                if k not in s:
                    raise ConfigError(f"stages[{i}].{k}: missing", field=f"stages[{i}].{k}")
            stages.append(StageConfig(**dict(s)))
        kw = {k: d[k] for k in ("resolution", "stem_channels", "head_channels", "residual", "extra_dw", "name")
              if k in d}
        return cls(stages=tuple(stages), **kw)

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config: not valid JSON ({e.msg} at line {e.lineno})", field="config") from None
        return cls.from_dict(obj)

    def hash(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, no name): equal configs hash equal."""
        d = self.to_dict()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def to_string(self) -> str:
        """Compact form, e.g. ``r224_c24_d4w116s0.5k3_d8w232s0.5k3_d4w464s0.5k3_h1024``
        (``e`` after a stage = SE, trailing ``_res``/``_dw`` = residual/ShuffleNetV2*)."""
        parts = [f"r{self.resolution}", f"c{self.stem_channels}"]
        for s in self.stages:
            parts.append(f"d{s.depth}w{s.width}s{s.split_ratio:g}k{s.kernel}" + ("e" if s.se else ""))
        parts.append(f"h{self.head_channels}")
        if self.residual:
            parts.append("res")
        if self.extra_dw:
            parts.append("dw")
        return "_".join(parts)

    @classmethod
    def from_string(cls, text: str) -> "ArchConfig":
        import re

        tokens = text.strip().split("_")
        kw: dict[str, Any] = {}
        stages = []
        stage_re = re.compile(r"^d(\d+)w(\d+)s([0-9.]+)k(\d+)(e?)$")
        for t in tokens:
            if m := stage_re.match(t):
                stages.append(StageConfig(int(m[1]), int(m[2]), float(m[3]), bool(m[5]), int(m[4])))
            elif re.fullmatch(r"r\d+", t):
                kw["resolution"] = int(t[1:])
            elif re.fullmatch(r"c\d+", t):
                kw["stem_channels"] = int(t[1:])
            elif re.fullmatch(r"h\d+", t):
                kw["head_channels"] = int(t[1:])
            elif t == "res":
                kw["residual"] = True
            elif t == "dw":
                kw["extra_dw"] = True
            else:
                raise ConfigError(f"config string token {t!r}: not understood (e.g. d4w116s0.5k3)", field="config")
        return cls(stages=tuple(stages), **kw)

    def with_resolution(self, resolution: int) -> "ArchConfig":
        return replace(self, resolution=resolution)

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.stages)


def _paper(widths: tuple[int, int, int], head: int, *, se: bool = False, name: str) -> ArchConfig:
    return ArchConfig(
        stages=tuple(StageConfig(depth=d, width=w, se=se) for d, w in zip((4, 8, 4), widths)),
        stem_channels=24,
        head_channels=head,
        name=name,
    )


# The paper's Table 5 (torchvision's stages_out_channels). Registered explicitly; no file I/O at import.
PRESETS: dict[str, ArchConfig] = {}


def _register(cfg: ArchConfig) -> None:
    if cfg.name in PRESETS:
        raise ValueError(f"preset {cfg.name!r} registered twice")
    PRESETS[cfg.name] = cfg


_register(_paper((48, 96, 192), 1024, name="shufflenetv2-0.5x"))
_register(_paper((116, 232, 464), 1024, name="shufflenetv2-1.0x"))
_register(_paper((176, 352, 704), 1024, name="shufflenetv2-1.5x"))
_register(_paper((244, 488, 976), 2048, name="shufflenetv2-2.0x"))
_register(_paper((244, 488, 976), 2048, se=True, name="shufflenetv2-2.0x-se"))


def preset(name: str) -> ArchConfig:
    """Return a registered preset by name (``shufflenetv2-1.0x``; ``1.0x`` and ``1x`` also work)."""
    key = name.strip().lower()
    aliases = {k: k for k in PRESETS}
    for k in PRESETS:
        short = k.removeprefix("shufflenetv2-")
        aliases[short] = k
        aliases[short.replace(".0x", "x")] = k
        aliases["shufflenetv2-" + short.replace(".0x", "x")] = k
    if key not in aliases:
        raise ConfigError(f"preset {name!r}: unknown; choose one of {sorted(PRESETS)}", field="preset")
    return PRESETS[aliases[key]]


def load_config(source: "ArchConfig | Mapping[str, Any] | str | Path") -> ArchConfig:
    """Accept a config object, its dict form, a path to a JSON file, or a preset name."""
    if isinstance(source, ArchConfig):
        return source
    if isinstance(source, Mapping):
        return ArchConfig.from_dict(source)
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix == ".json" or p.exists():
            if not p.is_file():
                raise ConfigError(f"{p}: config file not found", field="config")
            try:
                text = p.read_text()
            except OSError as e:
                raise ConfigError(f"{p}: cannot read config ({e.strerror})", field="config") from None
            try:
                return ArchConfig.from_json(text)
            except ConfigError as e:
                raise ConfigError(f"{p}: {e}", field=e.field) from None
        return preset(str(source))
    raise ConfigError(f"config: cannot build from {type(source).__name__}", field="config")
