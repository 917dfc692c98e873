"""The ``picospec`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from picospec import __version__
from picospec.cloud import cli as cloud_cli
from picospec.codec.errors import PicospecError
from picospec.edge import cli as edge_cli
from picospec.lab import cli as lab_cli


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from picospec.runtime.models import prepare

    paths = prepare(args.pair, drafter=not args.target_only)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _cmd_models_verify(args: argparse.Namespace) -> int:
    from picospec.runtime.models import verify

    rows = verify(args.pair)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['pair']:8} {row['role']:8} {row['state']:10} {row['path']}")
        if not rows:
            print("nothing in the cache to verify")
    return 0 if all(row["state"] == "ok" for row in rows) else 1


def _cmd_models_list(args: argparse.Namespace) -> int:
    from picospec.runtime.models import PAIRS, listing

    rows = listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for pair in PAIRS.values():
        print(f"{pair.name}: {pair.description}")
        for row in rows:
            if row["pair"] == pair.name:
                size = row["size_bytes"]
                state = f"{size / 1e6:.0f} MB" if isinstance(size, int) else "not built"
                print(f"  {row['role']:8} {state:>10}  {row['path']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picospec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"picospec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    edge_cli.register(sub)
    cloud_cli.register(sub)
    lab_cli.register(sub)

    models = sub.add_parser("models", help="model provisioning").add_subparsers(
        dest="models", required=True
    )
    prep = models.add_parser("prepare", help="build and verify a model pair in the cache")
    prep.add_argument("--pair", default="smollm2", help="smollm2 (default) or gemma3")
    prep.add_argument("--target-only", action="store_true", help="skip the Q2_K drafter")
    prep.set_defaults(func=_cmd_models_prepare)
    ver = models.add_parser(
        "verify", help="re-hash every cached file (starts only re-hash files that changed)"
    )
    ver.add_argument("--pair", default=None, help="one pair (default: every pair in the cache)")
    ver.add_argument("--json", action="store_true")
    ver.set_defaults(func=_cmd_models_verify)
    lst = models.add_parser("list", help="show the pairs and the cache")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_cmd_models_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PicospecError as e:
        print(f"picospec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
