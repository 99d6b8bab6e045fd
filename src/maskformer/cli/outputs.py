"""Checks before a command writes a file or folder the user named: never replace what exists unless asked
(``--overwrite``), and never replace the input being read, asked or not."""

from __future__ import annotations

from pathlib import Path

from maskformer.errors import UserError

OVERWRITE_HELP = "replace OUTPUT if it exists (never the input being converted)"


def check_not_input(output: str | Path, sources: tuple[str | Path, ...]) -> None:
    """Raise a one-line ``UserError`` when writing ``output`` would replace or delete one of ``sources`` (the same
    file, or a folder holding it)."""
    resolved = Path(output).resolve()
    for source in sources:
        src = Path(source).resolve()
        if src == resolved or resolved in src.parents:
            raise UserError(f"{output}: writing it would replace the input {source}; write to another path")


def check_new_file(output: str | Path, *, overwrite: bool, sources: tuple[str | Path, ...] = ()) -> None:
    """Raise a one-line ``UserError`` when the file ``output`` cannot be written as asked: it is one of ``sources``
    or a folder holding one, it is a folder, or it exists and ``overwrite`` is false."""
    check_not_input(output, sources)
    out = Path(output)
    if out.is_dir():
        raise UserError(f"{output}: is a folder; name the file to write")
    if out.exists() and not overwrite:
        raise UserError(f"{output}: exists (write to a new path, or pass --overwrite to replace it)")
