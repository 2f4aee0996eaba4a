"""The ``nas`` command line: parse, call the library, print. Nothing else lives here.

Each command group keeps its subcommands in its own ``nas/cli/<group>.py`` module with an
``add_parsers(subparsers)`` function; :data:`COMMAND_MODULES` lists them. Handlers take the
parsed ``argparse.Namespace`` and return an exit code. Library errors (:class:`nas.errors.NasError`)
become one line on stderr and their ``exit_code`` (2 for user mistakes); no traceback. An error's ``field``
(the library's argument name, e.g. ``proxy_preset``) is shown as the command's flag (``--proxy-preset``)
when the command has one for it: the library never names CLI flags. Progress displays: :mod:`nas.cli.progress`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Iterator

from nas.errors import NasError

__all__ = ["main", "console", "err_console", "print_json"]

# One line per feature module; each registers its own subcommands.
COMMAND_MODULES = [
    "nas.cli.space",
    "nas.cli.paper",
    "nas.cli.latency",
    "nas.cli.agent",
    "nas.cli.export",
    "nas.cli.training",
    "nas.cli.search",
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def console():
    """The stdout rich console (imported lazily so `nas --help` stays fast)."""
    from rich.console import Console

    return Console()


def err_console():
    from rich.console import Console

    return Console(stderr=True)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (machine-readable output of ``--json``)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def build_parser() -> argparse.ArgumentParser:
    from nas import __version__

    parser = _Parser(
        prog="nas",
        description="Platform-aware neural architecture search (ShuffleNetV2-style spaces, measured latency).",
    )
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def _with_flag(parser: argparse.ArgumentParser, args: argparse.Namespace, e: NasError) -> str:
    """The error's message in the command's terms: its ``field`` shown as the command's flag.

    A message that starts with the field's name (``"proxy_preset 'x': unknown"``) gets the flag in its place
    (``"--proxy-preset 'x': unknown"``); any other gets ``"--proxy-preset: "`` in front. Fields that are not
    options of the running command (a table key, a file) leave the message as it is.
    """
    msg = str(e)
    flag = _flag_for(parser, args, getattr(e, "field", None))
    if flag is None or msg.startswith(flag):
        return msg
    field = e.field or ""
    if msg.startswith(field) and msg[len(field):len(field) + 1] in (" ", ":", ""):
        return flag + msg[len(field):]
    return f"{flag}: {msg}"


def _flag_for(parser: argparse.ArgumentParser, args: argparse.Namespace, field: str | None) -> str | None:
    """The longest option string of the running (sub)command whose dest is ``field``, if any."""
    if not field:
        return None

    def parsers(p: argparse.ArgumentParser, depth: int = 0) -> Iterator[argparse.ArgumentParser]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
                if chosen is not None and depth < 4:
                    yield chosen
                    yield from parsers(chosen, depth + 1)

    for p in parsers(parser):
        for action in p._actions:
            if action.dest == field and action.option_strings:
                return max(action.option_strings, key=len)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``nas`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NasError as e:
        sys.stderr.write(f"nas: error: {_with_flag(parser, args, e)}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("nas: interrupted; everything completed so far is saved, re-run the command to resume\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
