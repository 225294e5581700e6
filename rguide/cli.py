"""``rguide``: one console script, one sub-command module per capability.

Each module listed in ``COMMAND_MODULES`` defines ``register(subparsers)``,
which adds its sub-commands and sets ``func`` on them. Heavy imports (torch,
FastAPI, Celery) happen inside the command functions, so ``rguide --help`` and
``rguide stats`` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "rguide.cmd_sample",
    "rguide.cmd_train",
    "rguide.cmd_evaluate",
    "rguide.cmd_serve",
    "rguide.cmd_stats",
    "rguide.cmd_pilot",
    "rguide.cmd_viz",
    "rguide.cmd_replicate",
    "rguide.cmd_robustness",
    "rguide.cmd_truth_max",
]


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rguide",
        description="Robust classifier guidance: sample, train, serve, survey, analyse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from model_core.errors import InputError

    try:
        result = args.func(args)
    except (CLIError, InputError) as exc:
        print(f"rguide {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
