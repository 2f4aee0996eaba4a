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
                   help="cap on one measurement's wall time in seconds (default 120)")
    a.add_argument("--label", default=None, help="a name for this board, recorded in the tables built on it")
    a.add_argument("--json", action="store_true",
                   help="print one JSON line on startup (address, port, token file) instead of text")
    a.set_defaults(func=cmd_agent)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def cmd_agent(args: argparse.Namespace) -> int:
    from nas.agent.protocol import DEFAULT_PORT, AgentLimits
    from nas.agent.server import is_loopback, make_server
    from nas.agent.token import load_or_create_token, token_file_is_private

    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: must be in 0..65535")
    if not args.max_request_mb > 0:
        raise UsageError(f"--max-request-mb {args.max_request_mb}: must be > 0")
    limits = AgentLimits(max_request_bytes=int(args.max_request_mb * 2**20), max_repeats=args.max_repeats,
                         max_seconds=args.max_seconds)
    token, token_path, generated = load_or_create_token(args.token_file)
    server = make_server(host=args.host, port=port, token=token, limits=limits, label=args.label)
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
                            "limits": limits.to_dict(), "warnings": warnings}
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
        else:
            _say(f"token: {token_path}")
        _say(f"on the host: nas build-latency-table --device arm --remote <this-board>:{server.port} "
             "--token-file <file holding the token>")

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
