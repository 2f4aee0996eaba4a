"""`nas search` with a latency table built on another machine: one warning line (or exit 2 with --strict),
the mismatch in --json (issue 14). A real tiny table whose identity is doctored; a zero-cost search of 2 trials."""

from __future__ import annotations

import json

import pytest

from nas.cli import main
from search_study import tiny_env


@pytest.fixture(scope="module")
def doctored(tmp_path_factory):
    env = tiny_env(tmp_path_factory)
    doc = json.loads((env / "small.json").read_text())
    doc["identity"]["cpu_model"] = "Some Other CPU 9000"
    path = env / "elsewhere.json"
    path.write_text(json.dumps(doc))
    return env, path


def _argv(env, table, out, *extra):
    return ["search", "--space", str(env / "small.toml"), "--table", str(table), "--budget", "0.13MFLOPs",
            "--trials", "2", "--proxy", "zero-cost", "--presets", "none", "--out", str(out), *extra]


def test_search_warns_in_one_line_and_json_carries_the_mismatch(doctored, tmp_path, capsys):
    env, table = doctored
    assert main(_argv(env, table, tmp_path / "s", "--json")) == 0
    cap = capsys.readouterr()
    warnings = [line for line in cap.err.splitlines() if line.startswith("nas: warning: latency table")]
    assert len(warnings) == 1 and "Some Other CPU 9000" in warnings[0]
    assert any("cpu_model" in d for d in json.loads(cap.out)["table_mismatch"])


def test_search_strict_refuses_before_any_trial(doctored, tmp_path, capsys):
    env, table = doctored
    assert main(_argv(env, table, tmp_path / "t", "--strict")) == 2
    assert not (tmp_path / "t" / "study.db").exists()
    assert "\n" not in capsys.readouterr().err.strip()


def test_a_table_built_here_gives_no_warning(doctored, tmp_path, capsys):
    env, _ = doctored
    assert main(_argv(env, env / "small.json", tmp_path / "u", "--json")) == 0
    cap = capsys.readouterr()
    assert "nas: warning: latency table" not in cap.err and json.loads(cap.out)["table_mismatch"] == []
