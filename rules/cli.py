"""The ``omniops rules`` subcommands: check a rules file, test routing, list metrics.

The ``omniops`` command wires these in with :func:`add_rules_arguments` and
:func:`run_rules`::

    omniops rules check FILE                      # exit 1 and the located errors if invalid
    omniops rules route-test [--file FILE] severity=critical location=WH-NJ
    omniops rules metrics                         # metric names a rule may use
    omniops rules defaults                        # print the shipped default rules file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from rules.file import (
    RulesFile,
    RulesFileError,
    default_rules_path,
    default_rules_text,
    load_rules,
    parse_rules,
)
from rules.notify import parse_label_args, route_test
from store.registry import METRICS, markdown_table


def add_rules_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``rules`` and its subcommands to the ``omniops`` subparsers; return its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rules", help="check the rules file, test notification routing, list metrics"
    )
    sub = parser.add_subparsers(dest="rules_command", required=True)
    check = sub.add_parser("check", help="validate a rules file (exit 1 and the errors if bad)")
    check.add_argument("file", type=Path, help="the rules file (TOML)")
    test = sub.add_parser(
        "route-test", help="which receivers an alert with these labels reaches, and how"
    )
    test.add_argument("labels", nargs="+", metavar="key=value", help="alert labels")
    test.add_argument(
        "--file",
        type=Path,
        default=None,
        help="rules file (default: $OMNIOPS_RULES or ~/.config/omniops/rules.toml)",
    )
    metrics = sub.add_parser(
        "metrics", help="the metric names alert rules can use, with their labels"
    )
    metrics.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's metric table (units, panels, default thresholds) instead",
    )
    sub.add_parser("defaults", help="print the shipped default rules file")
    return parser


def run_rules(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the ``rules`` subcommand in ``args``; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    command = args.rules_command
    if command == "check":
        return _check(Path(args.file), out, err)
    if command == "route-test":
        return _route_test(args.labels, args.file, out, err)
    if command == "metrics":
        if getattr(args, "markdown", False):
            out.write(markdown_table())
            return 0
        for name, info in sorted(METRICS.items()):
            labels = ", ".join(info.labels) or "-"
            print(f"{name:38} labels: {labels:32} {info.definition}", file=out)
        return 0
    if command == "defaults":
        out.write(default_rules_text())
        return 0
    print(f"omniops rules: unknown command {command!r}", file=err)
    return 2


def _summary(rules: RulesFile) -> str:
    enabled = sum(1 for r in rules.alert if r.enabled)
    return (
        f"{len(rules.alert)} alert rules ({enabled} enabled), "
        f"{len(rules.notify.receivers)} receivers besides the console, "
        f"{len(rules.notify.inhibit)} inhibit rules"
    )


def _check(path: Path, out: TextIO, err: TextIO) -> int:
    try:
        loaded = load_rules(path)
    except RulesFileError as exc:
        for problem in exc.problems:
            print(str(problem), file=err)
        count = len(exc.problems)
        print(
            f"{path}: refused ({count} problem{'s' if count != 1 else ''}); running omniops "
            "processes keep their last good rules until it is fixed.",
            file=err,
        )
        return 1
    print(f"{path}: OK, {_summary(loaded.rules)}", file=out)
    return 0


def _route_test(labels_args: list[str], file: Path | None, out: TextIO, err: TextIO) -> int:
    try:
        labels = parse_label_args(labels_args)
    except ValueError as exc:
        print(f"omniops rules route-test: {exc}", file=err)
        return 2
    path = file or default_rules_path()
    try:
        if path.exists() or file is not None:
            rules = load_rules(path).rules
            source = str(path)
        else:
            rules = parse_rules(default_rules_text(), Path("defaults.toml"))
            source = f"the shipped defaults ({path} does not exist yet)"
    except RulesFileError as exc:
        print(str(exc), file=err)
        return 1
    result = route_test(rules.notify, labels)
    print(f"routing tree of {source}", file=out)
    print(result.text(rules.notify.route), file=out)
    return 0
