"""CLI: ``nas agent``, the board-side measurement server (see :mod:`nas.agent`).

Runs on the board with only numpy, onnxruntime and onnx importable (no torch, no rich): output is plain
lines, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from nas.errors import UsageError

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agent", help="serve latency measurements on this machine (run it on the board)")
    a.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: reach it through `ssh -L`; 0.0.0.0 = every "
                        "interface, with a warning)")
    a.add_argument("--port", type=int, default=None, help="TCP port (default 8765; 0 = any free port, printed)")
    a.add_argument("--token-file", default=None,
                   help="shared token file (default ~/.config/nas/agent_token; generated with mode 0600 if missing)")
    a.add_argument("--max-request-mb", type=float, default=128.0,
                   help="largest accepted request (the models) in MiB (default 128)")
    a.add_argument("--max-repeats", type=int, default=1000,
                   help="cap on timed runs (and warm-up runs) per measurement request (default 1000)")
    a.add_argument("--max-seconds", type=float, default=120.0,
                   help="cap on one measurement's wall time in seconds; the measuring process is killed past it "
                        "(default 120)")
    a.add_argument("--max-memory-mb", type=float, default=2048.0,
                   help="address space in MiB the measuring process may add once onnxruntime is loaded; a model "
                        "needing more is refused (default 2048)")
    a.add_argument("--header-seconds", type=float, default=5.0,
                   help="time a connection has to send its request line and headers (default 5)")
    a.add_argument("--label", default=None, help="a name for this board, recorded in the tables built on it")
    a.add_argument("--json", action="store_true",
                   help="print one JSON line on startup (address, port, token file) instead of text")
    a.set_defaults(func=cmd_agent)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _host_hint(host: str, port: int) -> str:
    """What to run on the host: through an SSH tunnel when the agent listens on loopback only."""
    from nas.agent.server import is_loopback

    build = "nas build-latency-table --device arm --remote {} --token-file <file holding the token>"
    if is_loopback(host):
        return (f"on the host: ssh -N -L {port}:127.0.0.1:{port} <user>@<this-board> &\n"
                f"then:        {build.format(f'127.0.0.1:{port}')}")
    return f"on the host: {build.format(f'<this-board>:{port}')}"


def cmd_agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.agent.protocol import DEFAULT_PORT, AgentLimits
    from nas.agent.server import make_server, private_workdir
    from nas.agent.token import load_or_create_token

    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: must be in 0..65535")
    for flag, v in (("--max-request-mb", args.max_request_mb), ("--max-memory-mb", args.max_memory_mb)):
        if not 0 < v < float("inf"):
            raise UsageError(f"{flag} {v}: must be > 0")
    limits = AgentLimits(max_request_bytes=int(args.max_request_mb * 2**20), max_repeats=args.max_repeats,
                         max_seconds=args.max_seconds, max_memory_bytes=int(args.max_memory_mb * 2**20),
                         header_seconds=args.header_seconds)
    token_file = Path(args.token_file).expanduser().resolve() if args.token_file else None  # before the chdir
    token, token_path, generated = load_or_create_token(token_file)
    with private_workdir() as workdir:  # nothing the agent runs can name a file relative to where it started
        server = make_server(host=args.host, port=port, token=token, limits=limits, label=args.label)
        return _serve(server, args, limits, token, token_path, generated, workdir)


def _serve(server: Any, args: argparse.Namespace, limits: Any, token: str, token_path: Any, generated: bool,
           workdir: str) -> int:
    """Print the start-up lines (or the JSON line), then serve until SIGTERM / Ctrl-C."""
    from nas.agent.server import is_loopback
    from nas.agent.token import token_file_is_private

    warnings = []
    if not is_loopback(args.host):
        warnings.append(f"listening on {args.host}, beyond this machine: anyone who can reach port {server.port} and "
                        "holds the token can run ONNX models here, and HTTP is not encrypted; on a shared network "
                        "keep the default 127.0.0.1 and use `ssh -L` from the host instead")
    if not token_file_is_private(token_path):
        warnings.append(f"{token_path} is readable by other users: chmod 600 {token_path}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    info: dict[str, Any] = {"listening": f"{host}:{server.port}", "host": args.host, "port": server.port,
                            "token_file": str(token_path), "token_generated": generated,
                            "limits": limits.to_dict(), "workdir": workdir, "warnings": warnings}
    if generated:
        info["token"] = token  # printed this once; afterwards it is only in the 0600 file
    for w in warnings:
        sys.stderr.write(f"nas agent: warning: {w}\n")
    if args.json:
        _say(json.dumps(info))
    else:
        _say(f"nas agent listening on {info['listening']} (limits: {args.max_request_mb:g} MiB, "
             f"{limits.max_repeats} repeats, {limits.max_seconds:g} s per request)")
        if generated:
            _say(f"new token (stored in {token_path}, mode 0600; shown only this once):\n{token}")
        # On every start (also after a first start that failed once the token was written): where it is.
        _say(f"token: in {token_path} (mode 0600); read it on this board with: cat {token_path}")
        _say(_host_hint(args.host, server.port))

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)  # `kill`/systemd stop: close the socket cleanly
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0
