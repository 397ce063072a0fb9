"""docs/cli.md is the command's own help, as scripts/cli_reference.py renders it."""

import importlib.util
from pathlib import Path

# the repository root: the nearest folder above this file that holds the script
ROOT = next(p for p in Path(__file__).resolve().parents
            if (p / "scripts" / "cli_reference.py").is_file())


def _cli_reference():
    """scripts/cli_reference.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cli_reference",
                                                  ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_the_commands_help():
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == _cli_reference().render(), (
        "docs/cli.md differs from the help of `sharpzo-ext` and its subcommands: run "
        "`python scripts/cli_reference.py` and commit docs/cli.md")
