"""The board agent against the attacks of issue 13, as a real process on loopback with short deadlines set
from its command line: each attack is refused or killed within its deadline, the agent stays alive, a valid
measurement succeeds right after, and its resident memory after the whole suite stays below twice its idle
size. Also: the op allowlist is exactly what nas exports, and every kind of graph nas sends passes it.

The attack models are tiny and built with ``onnx.helper`` (tests/agent_attacks.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nas.agent import protocol
from nas.agent.bounded import printable, strict_json
from nas.agent.checks import ALLOWED_OPS, ONNX_DOMAINS, check_onnx, element_cap, tensor_cap
from nas.agent.protocol import AgentLimits
from nas.backends.remote import parse_address, request_identity, request_measure
from nas.errors import AgentError, UsageError
import agent_attacks as attacks  # tests/ is on sys.path under pytest
from test_agent import FAST, REPO, Agent, _small_onnx

MAX_SECONDS = 2.0  # the test agent's --max-seconds: a run past it is killed
HEADER_SECONDS = 1.5  # its --header-seconds: slow headers are dropped after this
MEMORY_MB = 128  # its --max-memory-mb
FLAGS = ("--max-seconds", str(MAX_SECONDS), "--header-seconds", str(HEADER_SECONDS), "--max-memory-mb",
         str(MEMORY_MB))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class _State:
    """The shared agent, its token and its idle resident size (after one valid measurement)."""

    def __init__(self, work: Path) -> None:
        self.agent = Agent(work, work / "token", extra=FLAGS)
        self.token = (work / "token").read_text().strip()
        self.valid()
        time.sleep(0.2)
        self.idle_rss_kb = _rss_kb(self.agent.proc.pid)

    def valid(self) -> dict:
        """A valid measurement: must succeed after every attack (the client retries 503 for a few seconds)."""
        out = request_measure(self.agent.address, _small_onnx(), token=self.token, input_shapes=[[1, 3, 32, 32]],
                              settings=FAST, timeout_s=30)
        assert out["measurements"][0]["n"] >= 5
        assert self.agent.proc.poll() is None
        return out

    def stats(self) -> dict:
        return request_identity(self.agent.address, token=self.token)["stats"]


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    work = tmp_path_factory.mktemp("agent_security")
    (work / "etc").mkdir()
    (work / "etc" / "passwd").write_text("root:secret:0:0\n")  # what the attack of point 1 would read
    state = _State(work)
    yield state
    state.agent.stop()


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NAS_AGENT_TOKEN", raising=False)


# --------------------------------------------------------------------------- raw requests
def _raw(s: _State, data: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``data`` on a fresh connection; the status and body of the answer (0 if none came)."""
    host, port = parse_address(s.agent.address)
    with socket.create_connection((host, port), timeout=timeout) as c:
        try:
            c.sendall(data)
        except OSError:
            pass
        chunks = []
        try:
            while True:  # bounded by the socket timeout and the agent closing the connection
                part = c.recv(65536)
                if not part:
                    break
                chunks.append(part)
        except OSError:
            pass
    raw = b"".join(chunks)
    if not raw.startswith(b"HTTP/"):
        return 0, raw
    return int(raw.split(b" ", 2)[1]), raw.partition(b"\r\n\r\n")[2]


def _post(s: _State, body: bytes, meta: object, *, length: str | None = None) -> tuple[int, bytes]:
    head = (f"POST {protocol.MEASURE_PATH} HTTP/1.0\r\nAuthorization: Bearer {s.token}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n").encode("latin-1")
    meta_s = meta if isinstance(meta, str) else json.dumps(meta)
    return _raw(s, head + f"{protocol.MEASURE_HEADER}: {meta_s}\r\n\r\n".encode("latin-1") + body)


def _meta(models: list[bytes], shapes: list[list[int]], settings: dict | None = None) -> dict:
    return protocol.measure_meta(sizes=[len(m) for m in models], input_shapes=shapes,
                                 settings=settings if settings is not None else FAST.to_dict(), threads=1,
                                 device="cpu")


def _measure_raw(s: _State, models: list[bytes], shapes: list[list[int]]) -> tuple[int, dict]:
    status, body = _post(s, b"".join(models), _meta(models, shapes))
    return status, json.loads(body or b"{}")


# --------------------------------------------------------------------------- the attacks
def test_function_attribute_default_cannot_read_files(s):
    model = attacks.function_file_read()
    status, obj = _measure_raw(s, [model], [[1, 1, 1, 1]])
    assert status == 400 and "external data" in obj[protocol.ERROR]
    with pytest.raises(AgentError) as e:  # without the file reference: local functions are refused too
        check_onnx(attacks.function_file_read(external=False), input_shape=(1, 1, 1, 1), max_elements=10**6)
    assert e.value.field == "model"
    s.valid()


def test_loop_of_1e15_iterations_is_refused(s):
    t0 = time.monotonic()
    status, obj = _measure_raw(s, [attacks.endless_loop()], [[1, 1, 1, 1]])
    assert status == 400 and "Loop" in obj[protocol.ERROR] and time.monotonic() - t0 < MAX_SECONDS
    s.valid()


@pytest.mark.parametrize("make, shape", [
    (attacks.constant_of_shape, [1, 1, 1, 1]),
    (attacks.expand, [1, 1, 1, 1]),
    (lambda: attacks.identity(8192), [1, 1, 8192, 8192]),
    (attacks.concat_growth, [1, 1, 2048, 2048]),
    (attacks.contrib_op, [1, 1, 4, 4]),
], ids=["constant_of_shape_5e8", "expand_1GiB", "identity_8192x8192", "concat_64M", "contrib_domain"])
def test_memory_bombs_and_foreign_ops_are_refused_from_the_graph(s, make, shape):
    status, obj = _measure_raw(s, [make()], [shape])
    assert status == 400, obj
    s.valid()


def test_many_models_beyond_the_request_element_cap_are_refused(s):
    side = 4096  # each model: two tensors of 16.8 M elements, under the caps; eight models beyond the request's
    models = [attacks.identity(side)] * 8
    limits = AgentLimits()
    assert side * side < tensor_cap(limits) and 2 * side * side < element_cap(limits) < 16 * side * side
    status, obj = _measure_raw(s, models, [[1, 1, side, side]] * 8)
    assert status == 400 and "in all" in obj[protocol.ERROR]
    s.valid()


def test_a_run_past_max_seconds_is_killed_and_the_agent_goes_on(s):
    killed = s.stats()["killed"]
    t0 = time.monotonic()
    status, obj = _measure_raw(s, [attacks.slow_convs()], [[1, 512, 64, 64]])
    took = time.monotonic() - t0
    assert status == 422 and "killed" in obj[protocol.ERROR], obj
    assert took < MAX_SECONDS + 3.0  # killed at the deadline (+0.5 s grace), not after the run
    assert s.stats()["killed"] == killed + 1
    s.valid()  # the replaced child measures


def test_a_model_beyond_the_memory_limit_is_answered_422(s):
    # 30 M-element input: under the element caps, but its float64 random input alone is 240 MiB, beyond the
    # child's 128 MiB of extra address space: refused at its first allocation.
    c, side = 30, 1024
    w = numpy_helper.from_array(np.ones((c, c, 1, 1), np.float32), "w")
    model = attacks.model([helper.make_node("Conv", ["x", "w"], ["y"])], [attacks.vi("x", [1, c, side, side])],
                   [attacks.vi("y", [1, c, side, side])], [w])
    status, obj = _measure_raw(s, [model], [[1, c, side, side]])
    assert status == 422 and "max_memory_bytes" in obj[protocol.ERROR], obj
    s.valid()


def test_slowloris_connections_are_dropped_at_the_header_deadline(s):
    host, port = parse_address(s.agent.address)
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(8)]
    closed_at: list[float] = []
    t0 = time.monotonic()

    def trickle(c: socket.socket) -> None:
        try:
            for b in b"POST /v1/measure HTTP/1.0\r\n":  # bounded: one byte a second, ~27 s at most
                c.sendall(bytes([b]))
                c.settimeout(1.0)
                try:
                    if c.recv(4096) == b"":
                        break
                except TimeoutError:
                    continue
                break  # an answer (503 to the connections over the caps): the agent closes next
        except OSError:
            pass
        closed_at.append(time.monotonic() - t0)

    threads = [threading.Thread(target=trickle, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    time.sleep(0.3)
    s.valid()  # the real client gets through (retrying its 503s) while the trickling connections are open
    for t in threads:
        t.join(timeout=HEADER_SECONDS + 5)
    for c in conns:
        c.close()
    assert len(closed_at) == 8 and max(closed_at) < HEADER_SECONDS + 2.0, closed_at


def test_a_stalled_upload_is_cut_at_max_seconds_and_frees_the_lock(s):
    host, port = parse_address(s.agent.address)
    model = _small_onnx()
    meta = _meta([model], [[1, 3, 32, 32]])
    head = (f"POST {protocol.MEASURE_PATH} HTTP/1.0\r\nAuthorization: Bearer {s.token}\r\nContent-Length: "
            f"{len(model)}\r\n{protocol.MEASURE_HEADER}: {json.dumps(meta)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=MAX_SECONDS + 5) as c:
        c.sendall(head + model[:10])  # then nothing
        t0 = time.monotonic()
        answer = c.recv(65536)
        took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.0 408") and took < MAX_SECONDS + 1.0, (answer[:80], took)
    s.valid()


def test_malformed_requests_get_400_not_500(s):
    model = _small_onnx()
    meta = _meta([model], [[1, 3, 32, 32]])
    cases = {
        "superscript length": _post(s, model, meta, length="\u00b2"),
        "nested JSON": _post(s, model, "[" * 15_000 + "]" * 15_000),
        "5000-digit integer": _post(s, model, json.dumps(meta).replace('"threads": 1', '"threads": ' + "9" * 5000)),
        "NaN min_time_s": _post(s, model, json.dumps(_meta([model], [[1, 3, 32, 32]], {"min_time_s": float("nan")}))),
        "Infinity": _post(s, model, json.dumps(meta).replace('"threads": 1', '"threads": 1e999')),
    }
    for what, (status, body) in cases.items():
        assert status == 400, (what, status, body[:200])
    # Nested 30,000 deep (the case) the header alone is over the agent's header budget: 431.
    assert _post(s, model, "[" * 30_000 + "]" * 30_000)[0] == 431
    assert strict_json('{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    s.valid()


def test_oversize_headers_are_refused_and_their_memory_released(s):
    line = b"X-Filler: " + b"a" * 60_000 + b"\r\n"
    for _ in range(8):  # 8 x 6 MB of headers, as in the issue
        status, _ = _raw(s, b"GET /v1/identity HTTP/1.0\r\n" + line * 100 + b"\r\n")
        assert status in (0, 431)
    s.valid()


def test_request_paths_are_logged_escaped(s):
    _raw(s, b"GET /\x1b[31mred\x1b[0m HTTP/1.0\r\n\r\n")
    s.valid()
    log = Path(s.agent.log.name).read_text(errors="replace")
    assert "\x1b" not in log and "\\x1b[31mred" in log
    assert printable("a\x1bb\x00") == "a\\x1bb\\x00"


def test_the_agent_runs_in_a_private_empty_directory(s):
    workdir = Path(s.agent.info["workdir"])
    assert workdir.is_dir() and not any(workdir.iterdir()) and (workdir.stat().st_mode & 0o077) == 0
    assert Path(f"/proc/{s.agent.proc.pid}/cwd").resolve() == workdir.resolve()


def test_a_measuring_child_killed_while_idle_is_replaced(s):
    import os
    import signal

    pid = s.agent.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1  # the warm measuring child
    os.kill(int(children[0]), signal.SIGKILL)  # as the OOM killer would
    time.sleep(0.2)
    s.valid()


def test_the_check_cache_answers_only_for_equal_bytes(monkeypatch):
    import nas.agent.checks as checks

    calls = []
    real = checks.check_onnx
    monkeypatch.setattr(checks, "check_onnx", lambda b, **kw: calls.append(1) or real(b, **kw))
    cache, good = checks.CheckCache(entries=2), _small_onnx()
    kw = dict(input_shape=(1, 3, 32, 32), max_elements=10**6, max_tensor_elements=10**6)
    assert cache.check(good, **kw) == cache.check(bytes(bytearray(good)), **kw) and len(calls) == 1
    evil = good.replace(b"Relu", b"Loop")  # same length, other bytes: checked, and refused
    assert len(evil) == len(good)
    with pytest.raises(AgentError):
        cache.check(evil, **kw)
    assert len(calls) == 2
    cache.check(good, **{**kw, "max_elements": 10**7})  # other caps: checked again
    assert len(calls) == 3


def test_resident_memory_after_the_attacks_stays_below_twice_idle(s):
    """Runs last in this module: after every attack above."""
    s.valid()
    after = _rss_kb(s.agent.proc.pid)
    print(f"agent VmRSS idle {s.idle_rss_kb} kB, after the attack suite {after} kB")
    assert after < 2 * s.idle_rss_kb


def test_startup_lines_say_where_the_token_is_and_how_to_tunnel(s, tmp_path):
    """A first start that fails after writing the token (its port is taken), then a start that works: the
    second prints where the token is and how to read it, and the SSH-tunnel form for a loopback agent."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tok = tmp_path / "tok"
    cmd = [sys.executable, "-m", "nas", "agent", "--token-file", str(tok)]
    first = subprocess.run([*cmd, "--port", str(s.agent.port)], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 2 and tok.exists()  # the token was written, the agent could not listen
    proc = subprocess.Popen([*cmd, "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]  # bounded: 4 lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = "".join(lines)
    port = lines[0].split(":")[1].split()[0]
    assert f"cat {tok}" in text and tok.read_text().strip() not in text  # where it is, not the secret
    assert f"ssh -N -L {port}:127.0.0.1:{port}" in text and f"--remote 127.0.0.1:{port}" in text


def test_limits_refuse_bad_values():
    for bad, field in (({"max_repeats": 0}, "max_repeats"), ({"max_seconds": 0}, "max_seconds"),
                       ({"max_seconds": float("nan")}, "max_seconds"), ({"header_seconds": 0}, "header_seconds"),
                       ({"max_memory_bytes": 1000}, "max_memory_mb"), ({"max_request_bytes": 10}, "max_request_mb")):
        with pytest.raises(UsageError) as e:
            AgentLimits(**bad)
        assert e.value.field == field


# --------------------------------------------------------------------------- the allowlist
def _nas_graphs():
    """(name, onnx bytes, full input shape) of every kind of graph nas sends: one block per structure of the
    shipped space (with and without residual + extra_dw), both probe halves, a cold replica of its largest
    block, the calibration networks (the presets, then a seeded draw), one network per zoo family, and every
    guideline network."""
    from nas.arch import PRESETS
    from nas.backends.onnxruntime import export_onnx
    from nas.builder import build_block, build_model
    from nas.latency.calibrate import calibration_configs
    from nas.latency.cold import cold_copies, replicate_onnx
    from nas.latency.probe import MEMORY_PROBE_SHAPE, PROBE_SHAPE, memory_probe, reference_probe
    from nas.paper.guidelines import guideline_experiments
    from nas.paper.zoo import REFERENCES
    from nas.space import load_space

    def export(name, module, shape):
        shape = (1, *shape) if len(shape) == 3 else tuple(shape)
        return name, export_onnx(module.eval(), input_shape=shape), shape

    space = load_space(REPO / "search_spaces" / "shufflenetv2.toml")
    keys = space.enumerate_blocks()
    firsts: dict = {}
    for k in keys:  # the ops depend on a block's structure, not on its widths
        firsts.setdefault((k.kind, k.se, k.kernel, k.split_ratio, k.in_channels == k.out_channels), k)
    for k in firsts.values():
        for flags in ({}, {"residual": True, "extra_dw": True}):
            kk = dataclasses.replace(k, **flags)
            yield export(f"block {kk}", build_block(kk), (kk.in_channels, kk.resolution, kk.resolution))
    yield export("probe compute", reference_probe(), PROBE_SHAPE)
    yield export("probe memory", memory_probe(), MEMORY_PROBE_SHAPE)
    big = max(keys, key=lambda k: k.in_channels * k.out_channels)
    _, onnx_bytes, shape = export("", build_block(big), (big.in_channels, big.resolution, big.resolution))
    yield f"cold x{cold_copies(big)} {big}", replicate_onnx(onnx_bytes, cold_copies(big)), shape
    for cfg in calibration_configs(space, 224, len(PRESETS) + 1, 0):
        yield export(f"network {cfg.to_string()}", build_model(cfg), (3, 224, 224))
    for name in ("mobilenetv1-0.25", "mobilenetv2-0.15", "shufflenetv1-g3-0.5x"):
        ref = REFERENCES[name]
        yield export(f"zoo {name}", ref.build(), (3, ref.resolution, ref.resolution))
    for exp in guideline_experiments(repeats=1):  # the ops do not depend on the repeats
        for v in exp.variants:
            yield export(f"guideline {v.label}", v.build(), v.input_shape)


@pytest.mark.slow
def test_the_allowlist_is_exactly_what_nas_exports_and_all_of_it_passes():
    limits = AgentLimits()
    used: set[str] = set()
    for name, onnx_bytes, shape in _nas_graphs():
        model = onnx.load_from_string(onnx_bytes)
        assert {n.domain for n in model.graph.node} <= ONNX_DOMAINS, name
        used |= {n.op_type for n in model.graph.node}
        check_onnx(onnx_bytes, input_shape=shape, max_elements=element_cap(limits),
                   max_tensor_elements=tensor_cap(limits))  # raises AgentError naming what is refused
    assert used == ALLOWED_OPS, (sorted(used - ALLOWED_OPS), sorted(ALLOWED_OPS - used))
