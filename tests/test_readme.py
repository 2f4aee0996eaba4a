"""The README's Python example runs as written (build a toy table -> search -> export), in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md: no ```python block after <!-- python-example -->"
    return m.group(1)


def test_readme_python_example_runs(tmp_path):
    (tmp_path / "search_spaces").symlink_to(REPO / "search_spaces")
    (tmp_path / "example.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ms predicted" in r.stdout and "trial " in r.stdout
    assert (tmp_path / "runs/example/tiny_cpu.json").is_file()
    exported = list((tmp_path / "runs/example/found").glob("*"))
    assert any(p.suffix == ".onnx" for p in exported) and any(p.suffix == ".json" for p in exported)
