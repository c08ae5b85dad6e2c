"""The command lines of the emotion-* tools (not the build's, which is HfArgumentParser's): a dataclass's
fields are its options, read by tyro (a field's docstring is its help).

The same settings for every command, so that the flags keep the names they had under argparse:
nested dataclasses add no prefix (`--http-port`, not `--server.http-port`), and a bool field is one
flag, not a pair: `--json` for a False default, `--no-int8` for a True one. Bad options exit with 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import tyro

Options = TypeVar("Options")

SETTINGS = (tyro.conf.OmitArgPrefixes, tyro.conf.FlagCreatePairsOff)


def parse(options: type[Options], argv: Sequence[str] | None, description: str | None) -> Options:
    """The command line `argv` (None: sys.argv) as an instance of the dataclass `options`; exits 2 on bad options."""
    prog = Path(sys.argv[0]).name  # as argparse names it, not the whole path
    return tyro.cli(options, prog=prog, args=argv, description=description, config=SETTINGS)


def value_or(const: str, metavar: str) -> tyro.constructors.PrimitiveConstructorSpec:
    """A string option whose value may be left out, meaning `const` (argparse's nargs="?" with const);
    for `Annotated[str, value_or(...)] | None`, None when the option is absent.

    tyro reads such an option's values up to the next flag, leaving a positional at the end of the
    command line alone: `SOURCE --compare-with [CHECKPOINT]` and `--compare-with CHECKPOINT SOURCE`
    work, `--compare-with CHECKPOINT SOURCE --json` is a usage error (exit 2), not a wrong reading.
    """

    def read(values: list[str]) -> str:
        if len(values) > 1:
            raise ValueError(f"one {metavar} at most, got {len(values)}: {' '.join(values)}")
        return values[0] if values else const

    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=(0, 1),
        metavar=f"[{metavar}]",
        instance_from_str=read,
        is_instance=lambda value: isinstance(value, str),
        str_from_instance=lambda value: [value],
    )


def usage_error(message: str) -> int:
    """Exit code 2 with a one-line message, for what the types cannot say (argparse's parser.error)."""
    print(f"error: {message}", file=sys.stderr)
    return 2
