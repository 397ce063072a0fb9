"""Writes docs/cli.md, the reference of the `sharpzo-ext` command, from the command's own parser.

    python scripts/cli_reference.py           # write docs/cli.md
    python scripts/cli_reference.py --check   # exit 1 if docs/cli.md is not what it would write

Each subcommand's help is argparse's own `format_help()`, under the program name `sharpzo-ext`
and at a fixed width (COLUMNS=100, no colour), so the page is the same on every machine and
terminal. python_tests/cli/test_cli_reference.py fails when docs/cli.md and the parser differ.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "cli.md"
PROG = "sharpzo-ext"
COLUMNS = 100

HEADER = f"""# The `{PROG}` command

Generated from the command's own parser by `python scripts/cli_reference.py`; do not edit it by
hand. `python_tests/cli/test_cli_reference.py` fails when this page and the parser differ. The
command is also `python -m sharpzo_ext`. A first run: [getting-started.md](getting-started.md);
what the options do: [clip.md](clip.md), [heads.md](heads.md), [results.md](results.md),
[benchmarks.md](benchmarks.md).
"""


@contextlib.contextmanager
def _fixed_terminal():
    """argparse wraps help at the terminal's width ($COLUMNS first) and, on newer Pythons,
    colours it where the terminal allows: both fixed here, and put back afterwards."""
    fixed = {"COLUMNS": str(COLUMNS), "NO_COLOR": "1", "PYTHON_COLORS": "0"}
    saved = {name: os.environ.get(name) for name in (*fixed, "FORCE_COLOR")}
    os.environ.update(fixed)
    os.environ.pop("FORCE_COLOR", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, in the order the command adds them."""
    for action in parser._actions:  # argparse keeps them nowhere public
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _section(title: str, parser: argparse.ArgumentParser) -> str:
    return f"## `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"


def _methods() -> str:
    """The methods of `train --method` and `compare --methods`, from their tables."""
    from sharpzo_ext.clip.runs.compare import COMPARED  # noqa: PLC0415
    from sharpzo_ext.clip.runs.method_table import METHODS  # noqa: PLC0415

    rows = [f"| `{name}` | {METHODS[name].kind if name in METHODS else 'compare only'} | "
            f"{row.help} |" for name, row in COMPARED.items()]
    return ("## The methods\n\nFrom the method table (`clip/runs/method_table.py`) and "
            "compare's variants of its rows (`COMPARED` in `clip/runs/compare.py`): `train "
            "--method` takes every name but the variants', `compare --methods` every name.\n\n"
            "| method | kind | what runs |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")


def render() -> str:
    """The text of docs/cli.md."""
    from sharpzo_ext.cli import build_parser  # noqa: PLC0415

    with _fixed_terminal():
        parser = build_parser()
        parser.prog = PROG
        sections = [HEADER, _section(PROG, parser)]
        for name, sub in _subcommands(parser).items():
            sub.prog = f"{PROG} {name}"
            sections.append(_section(f"{PROG} {name}", sub))
    return "\n".join(sections + [_methods()])


def _write_atomically(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file in the same folder and os.replace, with the
    mode a new file gets under the umask (mkstemp's would be 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {OUTPUT.relative_to(ROOT)} differs from what this "
                        "script would write (writes nothing)")
    args = parser.parse_args(argv)
    text = render()
    name = OUTPUT.relative_to(ROOT)
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else None
        if current != text:
            state = "is missing" if current is None else "differs from the command's help"
            print(f"{name} {state}: run `python scripts/cli_reference.py`", file=sys.stderr)
            return 1
        print(f"{name} is up to date")
        return 0
    _write_atomically(OUTPUT, text)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
