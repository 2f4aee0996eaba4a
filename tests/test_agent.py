"""The board agent as a real process on loopback (`python -m nas agent --port 0`): a table built through it
end to end with the agent's identity, every refusal (token, size, not ONNX, input shape, repeat cap,
external data, non-ARM for --device arm), one measurement at a time, a hung agent, and an agent killed in
the middle of a build (restarted at once: the build carries on; down for good: the build stops with
everything saved and a resumed build measures only the rest)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nas.agent import protocol
from nas.agent.checks import check_onnx
from nas.agent.request import MeasureRequest, parse_request
from nas.agent.measure import measure_request
from nas.agent.protocol import AgentLimits
from nas.agent.token import load_or_create_token
from nas.backends import MeasureSettings, get_backend
from nas.backends.host import is_arm_host
from nas.backends.remote import RemoteBackend, parse_address, read_token, request_identity, request_measure
from nas.cli import main
from nas.errors import AgentError, BackendUnavailableError, MeasurementError, UsageError
from nas.space import load_space
from nas.latency.table import build_table, load_table

from spaces import FAST, TINY  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_ENTRIES = 12
LABEL = "test-board"
IS_ARM = is_arm_host()


# --------------------------------------------------------------------------- a real agent process
class Agent:
    """``python -m nas agent`` in a subprocess; ``info`` is its one JSON startup line."""

    def __init__(self, workdir: Path, token_file: Path, *, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   XDG_CONFIG_HOME=str(workdir))
        self.log = open(workdir / f"agent-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nas", "agent", "--port", str(port), "--json", "--token-file", str(token_file),
             "--label", LABEL, *extra], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=60)  # bounded: the agent prints its address once it listens
        except queue.Empty:
            self.stop()
            pytest.fail("the agent did not start within 60 s")
        if not line:
            self.stop()
            pytest.fail(f"the agent exited at startup: {(workdir / self.log.name).read_text()[-500:]}")
        self.info = json.loads(line)
        self.port = int(self.info["port"])
        self.address = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("agent")
    (d / "tiny.toml").write_text(TINY)
    return d


@pytest.fixture(scope="module")
def agent(work):
    a = Agent(work, work / "token")
    yield a
    a.stop()


@pytest.fixture(scope="module")
def token(agent, work) -> str:
    return (work / "token").read_text().strip()


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch, tmp_path):
    """Tests see no token but the ones they pass (not the developer's ~/.config or environment)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NAS_AGENT_TOKEN", raising=False)


def _small_onnx(shape=(1, 3, 32, 32)) -> bytes:
    import torch

    from nas.backends.onnxruntime import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(shape[1], 8, 3, padding=1), torch.nn.ReLU())
    return export_onnx(model, input_shape=shape)


def _measurements(agent: Agent, token: str) -> int:
    return int(request_identity(agent.address, token=token)["stats"]["measurements"])


# --------------------------------------------------------------------------- token and startup
def test_token_is_generated_once_private_and_printed_only_then(agent, work, token, tmp_path):
    assert agent.info["token_generated"] and agent.info["token"] == token
    assert stat.S_IMODE((work / "token").stat().st_mode) == 0o600
    assert agent.info["host"] == "127.0.0.1" and not agent.info["warnings"]  # loopback: no warning
    t1, p, gen1 = load_or_create_token(tmp_path / "cfg" / "tok")
    t2, _, gen2 = load_or_create_token(p)
    assert gen1 and not gen2 and t1 == t2 and len(t1) >= 32
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(AgentError) as e:
        load_or_create_token(tmp_path / "short")
    assert e.value.field == "token_file"
    assert main(["agent", "--token-file", str(tmp_path / "short"), "--port", "0"]) == 2
    assert main(["agent", "--port", "70000"]) == 2


def test_host_side_parsing():
    assert parse_address("raspberrypi.local:8765") == ("raspberrypi.local", 8765)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("host", "host:", "host:0", "host:99999", ":80"):
        with pytest.raises(UsageError) as e:
            parse_address(bad)
        assert e.value.field == "remote"
    assert read_token(token=" abc ") == "abc"
    with pytest.raises(UsageError) as e:
        read_token(token_file="/nonexistent/token")
    assert e.value.field == "token_file"
    assert read_token() is None  # nothing in the environment (see the autouse fixture)


# --------------------------------------------------------------------------- a table through the agent
def test_build_and_validate_a_table_through_the_agent(agent, token, work):
    out = work / "remote.json"
    tok = str(work / "token")
    before = _measurements(agent, token)
    backend = get_backend("cpu", remote=agent.address, token=token)
    build_table(load_space(work / "tiny.toml"), backend, out=out, settings=FAST, network_settings=FAST,
                verify=False, calibration_nets=2)  # no verify pass: it re-measures basic units
    # One request for the 12 blocks (one group, paired with the reference probe on the agent: the agent takes
    # max_models = 32 models a request) and one per calibration network.
    assert backend.max_models == 32
    assert _measurements(agent, token) - before == 1 + 2
    old = get_backend("cpu", remote=agent.address, token=token)
    old.limits.pop("max_models")  # as an agent from before max_models answers: it took at most 8 models
    assert old.max_models == 8
    table = load_table(out, space=load_space(work / "tiny.toml"))
    assert table.complete and len(table.entries) == TINY_ENTRIES and table.calibration
    assert all(e.probe_ms > 0 and e.ratio > 0 for e in table.entries.values())
    ident = table.identity
    agent_ident = request_identity(agent.address, token=token)["identity"]
    # The device fields are the agent's: fields only an agent reports, and its values for the rest.
    assert ident["board"] == LABEL and ident["agent"]["protocol"] == 1
    assert ident["measured_via"] == f"nas agent at {agent.address}"
    assert ident["providers_available"] == agent_ident["providers_available"]
    for k in ("cpu_model", "arch", "runtime_version", "provider", "cpu_count", "node"):
        assert ident[k] == agent_ident[k]
    assert ident["device"] == "cpu" and ident["threads"] == 1 and ident["batch"] == 1
    # The CLI: validate through the agent, and build (a part of) a table with the default protocol.
    assert main(["validate-table", str(out), "--samples", "2", "--remote", agent.address, "--token-file", tok,
                 "--json"]) == 0
    assert load_table(out).validation["samples"] == 2
    cli_out = work / "remote_cli.json"
    assert main(["build-latency-table", "--device", "cpu", "--remote", agent.address, "--token-file", tok,
                 "--space", str(work / "tiny.toml"), "--out", str(cli_out), "--limit", "2", "--calibration-nets", "0",
                 "--json"]) == 0
    cli_table = json.loads(cli_out.read_text())
    assert len(cli_table["entries"]) == 2 and cli_table["identity"]["board"] == LABEL


# --------------------------------------------------------------------------- refusals
def _raw_post(address: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    host, port = parse_address(address)
    conn = http.client.HTTPConnection(host, port, timeout=10)  # bounded: the agent answers from the headers
    try:
        conn.putrequest("POST", "/v1/measure")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_refusals_measure_nothing(agent, token, work):
    onnx = _small_onnx()
    ok = dict(input_shapes=[[1, 3, 32, 32]], settings=FAST, threads=1, device="cpu", retries=0, timeout_s=30)
    before = _measurements(agent, token)
    refused = {
        "no token": lambda: request_measure(agent.address, onnx, token=None, **ok),
        "wrong token": lambda: request_measure(agent.address, onnx, token="x" * 43, **ok),
        "not ONNX": lambda: request_measure(agent.address, b"\x08\x07 not an onnx model" * 50, token=token, **ok),
        "input shape": lambda: request_measure(agent.address, onnx, token=token,
                                               **{**ok, "input_shapes": [[1, 3, 64, 64]]}),
        "channels": lambda: request_measure(agent.address, _small_onnx((1, 4, 32, 32)), token=token, **ok),
        "repeat cap": lambda: request_measure(agent.address, onnx, token=token, **{
            **ok, "settings": MeasureSettings(warmup=1, min_repeats=5, max_repeats=5000, min_time_s=0.0)}),
        "bad settings": lambda: request_measure(agent.address, onnx, token=token,
                                                **{**ok, "settings": {"warmup": "9e9"}}),
        "threads": lambda: request_measure(agent.address, onnx, token=token, **{**ok, "threads": 4096}),
        "second model": lambda: request_measure(agent.address, [onnx, b"junk" * 9], token=token,
                                                **{**ok, "input_shapes": [[1, 3, 32, 32]] * 2}),
        "models vs shapes": lambda: request_measure(agent.address, [onnx, onnx], token=token, **ok),
        "identity without token": lambda: request_identity(agent.address, token=None, retries=0),
    }
    if not IS_ARM:
        refused["arm on x86"] = lambda: request_measure(agent.address, onnx, token=token, **{**ok, "device": "arm"})
    for what, call in refused.items():
        with pytest.raises(AgentError, match="refused"):
            call()
    # Oversize: refused from Content-Length alone; the body is never sent (the answer would not come otherwise,
    # and _raw_post's socket timeout would raise).
    status, obj = _raw_post(agent.address, {"Authorization": f"Bearer {token}",
                                            "Content-Length": str(AgentLimits().max_request_bytes + 1),
                                            "X-Nas-Measure": json.dumps({"models": [
                                                {"input_shape": [1, 3, 32, 32],
                                                 "bytes": AgentLimits().max_request_bytes + 1}]})})
    assert status == 413 and protocol.ERROR in obj
    # No token is checked before the size: an unauthenticated client learns nothing else.
    assert _raw_post(agent.address, {"Content-Length": str(10**12)})[0] == 401
    assert _raw_post(agent.address, {"Authorization": f"Bearer {token}"})[0] == 411
    assert _measurements(agent, token) == before  # nothing was measured
    # ... and the agent still measures a good request afterwards.
    m = request_measure(agent.address, onnx, token=token, **ok)["measurements"][0]
    assert m["median_ms"] > 0 and m["n"] >= 5
    two = request_measure(agent.address, [onnx, _small_onnx((1, 3, 16, 16))], token=token,
                          **{**ok, "input_shapes": [[1, 3, 32, 32], [1, 3, 16, 16]]})["measurements"]
    assert len(two) == 2 and len(two[0]["round_medians_ms"]) == len(two[1]["round_medians_ms"]) == FAST.rounds


def test_cli_refusals_write_no_table(agent, work, tmp_path):
    space = str(work / "tiny.toml")
    out = tmp_path / "t.json"
    bad = tmp_path / "bad_token"
    bad.write_text("y" * 43)
    base = ["build-latency-table", "--remote", agent.address, "--space", space, "--out", str(out)]
    assert main([*base, "--device", "cpu"]) == 2  # no token anywhere
    assert main([*base, "--device", "cpu", "--token-file", str(bad)]) == 2
    assert main([*base, "--device", "cpu", "--token-file", str(tmp_path / "missing")]) == 2
    assert main([*base, "--device", "gpu", "--token-file", str(work / "token")]) == 2
    if not IS_ARM:  # an x86 agent is refused for --device arm
        with pytest.raises(BackendUnavailableError):
            get_backend("arm", remote=agent.address, token=(work / "token").read_text())
        assert main([*base, "--device", "arm", "--token-file", str(work / "token")]) == 2
    assert not out.exists()
    with pytest.raises(AgentError, match="unreachable"):  # nothing listens there
        RemoteBackend(device="cpu", threads=1, batch=1, remote="127.0.0.1:1", token="z" * 43, retries=1,
                      backoff_s=0.05)


def test_model_checks_in_process(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    good = _small_onnx()
    assert check_onnx(good, input_shape=(1, 3, 32, 32), max_elements=10**6) > 3 * 32 * 32
    with pytest.raises(AgentError) as e:
        check_onnx(good, input_shape=(2, 3, 32, 32), max_elements=10**6)
    assert e.value.field == "input_shape"
    with pytest.raises(AgentError) as e:  # the tensors' elements are capped
        check_onnx(good, input_shape=(1, 3, 32, 32), max_elements=1000)
    assert e.value.field == "model"
    w = numpy_helper.from_array(np.zeros((4,), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(AgentError, match="external data"):
        check_onnx(model.SerializeToString(), input_shape=(1, 1, 2, 2), max_elements=10**6)
    with pytest.raises(AgentError):
        check_onnx(b"", input_shape=(1, 1, 2, 2), max_elements=10**6)
    limits = AgentLimits(max_seconds=0.3)
    with pytest.raises(AgentError) as e:  # min_time_s beyond the time cap: refused before running
        parse_request({"models": [{"input_shape": [1, 3, 32, 32], "bytes": 10}], "settings": {"min_time_s": 1.0}},
                      limits=limits)
    assert e.value.field == "settings"
    with pytest.raises(AgentError) as e:
        parse_request({"models": [{"input_shape": [1, 3, 32], "bytes": 10}]}, limits=limits)
    assert e.value.field == "input_shape"
    with pytest.raises(AgentError) as e:
        parse_request({"models": [{"input_shape": [1, 3, 32, 32], "bytes": 10}], "threads": 0}, limits=limits)
    assert e.value.field == "threads"
    # The time cap stops a measurement that runs too long (6000 runs of a small conv: ~0.3 s > 0.05 s).
    req = MeasureRequest(input_shapes=((1, 3, 32, 32),), sizes=(len(good),), device="cpu", threads=1,
                         settings=MeasureSettings(warmup=0, min_repeats=1000, max_repeats=1000, min_time_s=0.0,
                                                  rounds=1, retries=5, max_spread_pct=1e-9))
    with pytest.raises(MeasurementError) as e:
        measure_request([good], req, limits=AgentLimits(max_seconds=0.05))
    assert e.value.field == "max_seconds"
    # AgentLimits' own checks: tests/test_agent_security.py::test_limits_refuse_bad_values


def test_the_wire_format_is_one_module_and_the_client_never_loads_the_server():
    assert {protocol.LIMIT_REQUEST_BYTES, protocol.LIMIT_REPEATS, protocol.LIMIT_SECONDS, protocol.LIMIT_MEMORY_BYTES,
            protocol.LIMIT_HEADER_SECONDS, protocol.LIMIT_MODELS} == set(AgentLimits().to_dict())
    code = ("import sys, nas.backends.remote; "
            "print(sorted(m for m in sys.modules if m.startswith('nas.agent')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "['nas.agent', 'nas.agent.protocol']"


# --------------------------------------------------------------------------- one at a time, hung agent
def test_measurements_never_overlap(agent, token):
    import torch

    from nas.backends.onnxruntime import export_onnx

    # ~28 M mult-adds: ~1 ms per run, so min_time_s=0.4 makes each measurement take >= 0.4 s of CPU time.
    onnx = export_onnx(torch.nn.Conv2d(3, 64, 3, padding=1), input_shape=(1, 3, 128, 128))
    # warmup 10: the run count is set from the warm-up runs, and the first run (arena allocation) is slow.
    slow = MeasureSettings(warmup=10, min_repeats=5, max_repeats=1000, min_time_s=0.4, rounds=1, retries=0)
    meta = protocol.measure_meta(sizes=[len(onnx)], input_shapes=[[1, 3, 128, 128]], settings=slow.to_dict(),
                                 threads=1, device="cpu")
    headers = {"Authorization": f"Bearer {token}", protocol.MEASURE_HEADER: json.dumps(meta),
               "Content-Type": "application/octet-stream"}
    host, port = parse_address(agent.address)
    conns = [http.client.HTTPConnection(host, port, timeout=60) for _ in range(2)]
    # Both requests are sent whole while the agent is stopped (the kernel accepts and buffers them), so they
    # reach it at the same moment however loaded this machine is: one must wait for the other's measurement.
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for c in conns:
            c.request("POST", protocol.MEASURE_PATH, body=onnx, headers=headers)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    answers = []
    for c in conns:
        resp = c.getresponse()
        assert resp.status == 200
        answers.append(json.loads(resp.read()))
        c.close()
    first, second = sorted(answers, key=lambda a: a[protocol.WAITED_S])
    # The second waited for (most of) the first measurement: they ran one after the other.
    assert first[protocol.SECONDS] > 0.2 and second[protocol.WAITED_S] >= 0.5 * first[protocol.SECONDS]


def test_hung_agent_times_out_with_a_clear_error(agent, token):
    backend = RemoteBackend(device="cpu", threads=1, batch=1, remote=agent.address, token=token, retries=0)
    backend.timeout_s = 1.5  # a real agent would get 2 * max_seconds + 30 s
    agent.proc.send_signal(signal.SIGSTOP)  # a really hung process: connects, never answers
    try:
        with pytest.raises(AgentError, match="no answer"):  # the client's own timeout, not a refusal
            backend.measure(_small_onnx(), input_shape=(1, 3, 32, 32), settings=FAST)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    assert backend.measure(_small_onnx(), input_shape=(1, 3, 32, 32), settings=FAST).n >= 5


# --------------------------------------------------------------------------- agent killed mid-build
def test_agent_restarted_mid_build_the_build_carries_on(work, token, tmp_path):
    first = Agent(work, work / "token")
    restarted: list[Agent] = []
    backend = RemoteBackend(device="cpu", threads=1, batch=1, remote=first.address, token=token, retries=6,
                            backoff_s=0.25)  # waits up to 0.25 * (2^6 - 1) ~ 16 s: the restart takes ~2 s

    def progress(phase: str, done: int, total: int, label: str) -> None:
        if phase == "blocks" and done == 4 and not restarted:
            first.kill()
            # Same address, a new process, started while the build already retries against the dead one.
            threading.Thread(target=lambda: restarted.append(Agent(work, work / "token", port=first.port)),
                             daemon=True).start()

    out = tmp_path / "carry_on.json"
    try:
        table = build_table(load_space(work / "tiny.toml"), backend, out=out, settings=FAST, network_settings=FAST,
                            verify=False, calibration_nets=0, progress=progress,
                            blocks_per_request=1)  # one block a request: the restart falls between two blocks
        assert table.complete and len(load_table(out).entries) == TINY_ENTRIES
        assert _measurements(restarted[0], token) == TINY_ENTRIES - 4  # the rest, each once
    finally:
        first.stop()
        for a in restarted:
            a.stop()


def test_agent_killed_mid_build_then_resume_measures_only_the_rest(work, token, tmp_path):
    first = Agent(work, work / "token")
    backend = RemoteBackend(device="cpu", threads=1, batch=1, remote=first.address, token=token, retries=1,
                            backoff_s=0.1)
    out = tmp_path / "killed.json"
    space = load_space(work / "tiny.toml")

    def progress(phase: str, done: int, total: int, label: str) -> None:
        if phase == "blocks" and done == 5:
            first.kill()

    try:
        with pytest.raises(AgentError, match="unreachable"):
            build_table(space, backend, out=out, settings=FAST, network_settings=FAST, verify=False,
                        calibration_nets=2, progress=progress, blocks_per_request=1)
    finally:
        first.stop()
    before = json.loads(out.read_text())["entries"]  # everything measured so far is saved
    assert len(before) == 5
    # Restarted at another port, this time on every interface (it warns; loopback still reaches it).
    second = Agent(work, work / "token", extra=("--host", "0.0.0.0"))
    assert second.info["warnings"] and not second.info["token_generated"] and "token" not in second.info
    try:
        again = RemoteBackend(device="cpu", threads=1, batch=1, remote=second.address, token=token)
        n0 = _measurements(second, token)
        table = build_table(space, again, out=out, resume=True, settings=FAST, network_settings=FAST,
                            verify=False, calibration_nets=2, blocks_per_request=1)
        measured = _measurements(second, token) - n0
    finally:
        second.stop()
    after = json.loads(out.read_text())["entries"]
    assert table.complete and len(after) == TINY_ENTRIES and table.calibration
    for k, e in before.items():  # nothing already measured was measured again
        assert after[k]["t"] == e["t"] and after[k]["raw_ms"] == e["raw_ms"]
    assert measured == TINY_ENTRIES - 5 + 2  # the 7 missing blocks and 2 calibration nets, nothing else
