"""The package's structure: which stage may import which (AST, every import, function-local ones too), and
`import nas` / `nas --help` staying free of torch, onnxruntime, optuna and matplotlib.

The rules are the README's architecture section: the core imports nothing above it; each stage imports the
core and the stages before it in the data flow; the agent server never imports search or table-building code;
the backends' client reaches the agent only through its wire protocol.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nas"
CORE = {"nas.errors", "nas.units", "nas.arch", "nas.space", "nas.blocks", "nas.builder", "nas.macs", "nas._io",
        "nas._lazy", "nas.checkpoint", "nas._data"}

# stage -> the module prefixes it may import besides the core and itself ("nas" alone: only `__version__`).
ALLOWED: dict[str, tuple[str, ...]] = {
    "core": (),
    "nas.backends": ("nas.agent.protocol",),
    "nas.agent": ("nas.backends",),
    "nas.latency": ("nas.backends",),
    "nas.training": (),
    "nas.search": ("nas.latency", "nas.training", "nas.backends"),
    "nas.export": ("nas.backends", "nas.latency", "nas.search.results", "nas.search.front", "nas.search.storage",
                   "nas.training"),
    "nas.paper": ("nas.backends", "nas.latency"),
    "nas.cli": ("nas",),
}
# Never, whatever the stage rules say (ARCHITECTURE.md: the board-side server stays small and safe).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "nas.agent": ("nas.search", "nas.latency", "nas.training", "nas.export", "nas.paper", "nas.cli"),
    "nas.backends.remote": ("nas.agent.server", "nas.agent.checks", "nas.agent.measure", "nas.agent.token"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(mod: str) -> str | None:
    if mod in CORE or any(mod.startswith(c + ".") for c in CORE):
        return "core"
    for stage in ALLOWED:
        if stage != "core" and (mod == stage or mod.startswith(stage + ".")):
            return stage
    return None  # nas/__init__.py, nas/__main__.py: the public face, may import anything (lazily)


def imports_of(source: str, mod: str) -> list[tuple[int, str]]:
    """Every ``nas...`` module that ``source`` (module ``mod``) imports, with its line; relative imports resolved."""
    out = []
    pkg = mod if (PKG.parent / Path(*mod.split("."))).is_dir() else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base == "nas":  # `from nas import x`: x may be a module (nas.errors) or a name (__version__)
                out += [(node.lineno, f"nas.{a.name}" if (PKG / a.name).exists() or (PKG / f"{a.name}.py").exists()
                         else "nas") for a in node.names]
            else:
                out.append((node.lineno, base))
    return [(line, m) for line, m in out if m == "nas" or m.startswith("nas.")]


def violations(source: str, mod: str) -> list[str]:
    stage = stage_of(mod)
    if stage is None:
        return []
    bad = []
    for line, target in imports_of(source, mod):
        tstage = stage_of(target)
        ok = (tstage == "core" or tstage == stage or (target == "nas" and stage != "core")
              or any(target == p or target.startswith(p + ".") for p in ALLOWED[stage]))
        for key, never in FORBIDDEN.items():
            if mod == key or mod.startswith(key + "."):
                ok = ok and not any(target == n or target.startswith(n + ".") for n in never)
        if not ok:
            bad.append(f"{mod}:{line} imports {target}")
    return bad


def all_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "_data" not in p.parts)


def test_import_directions():
    bad = [v for p in all_modules() for v in violations(p.read_text(), module_name(p))]
    assert not bad, "imports against the layering rules:\n" + "\n".join(bad)


@pytest.mark.parametrize("mod,source", [
    # the client importing the server, as backends/remote.py did before the split
    ("nas.backends.remote", "def f():\n    from nas.agent import server\n    from nas.agent.server import ARM_ARCHES\n"),
    ("nas.backends.remote", "from nas.agent.token import default_token_path\n"),
    ("nas.backends.remote", "from nas.latency.table import IDENTITY_KEYS\n"),
    ("nas.arch", "from nas.latency import predict\n"),
    ("nas.training.proxy", "from nas.export.formats import atomic_write_bytes\n"),
    ("nas.agent.server", "def f():\n    import nas.latency.build\n"),
    ("nas.latency.build", "from ..search import run\n"),
])
def test_the_checker_catches_what_it_must(mod, source):
    assert violations(source, mod), f"{mod}: {source!r} should be refused"


def test_the_checker_allows_the_protocol():
    assert not violations("from nas.agent.protocol import DEFAULT_PORT\nfrom nas.errors import AgentError\n",
                          "nas.backends.remote")


HEAVY = ("torch", "onnxruntime", "optuna", "matplotlib", "onnx")


@pytest.mark.parametrize("code", [
    "import nas",
    "import nas, nas.latency, nas.search, nas.training, nas.export, nas.paper, nas.agent, nas.backends",
    "from nas.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from nas.cli import main\nmain(['search', '--help'])",
])
def test_import_and_help_stay_light(code):
    probe = code + f"\nimport sys\nprint('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    heavy = [line for line in r.stdout.splitlines() if line.startswith("HEAVY:")]
    assert heavy == ["HEAVY:"], f"heavy modules imported: {heavy}"


def test_module_and_function_sizes():
    """No module over 450 lines and no function over 80 (the issue's bound; exceptions are named here)."""
    exceptions: set[str] = set()
    big = []
    for p in all_modules():
        text = p.read_text()
        mod = module_name(p)
        if len(text.splitlines()) > 450 and mod not in exceptions:
            big.append(f"{mod}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80 and f"{mod}.{node.name}" not in exceptions:
                    big.append(f"{mod}.{node.name}: {n} lines")
    assert not big, "\n".join(big)
