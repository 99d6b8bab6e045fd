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


def foreign_table(path: Path) -> str:
    """Why the file ``path`` is not a predictions.json this command wrote ("" if it is one, or absent)."""
    import json

    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except (ValueError, UnicodeDecodeError):
        return "not valid JSON"
    if not (isinstance(table, dict) and isinstance(table.get("annotations"), list)
            and isinstance(table.get("categories"), list)):  # fmt: skip
        return "not a table of annotations and categories"
    return ""


def panoptic_table(folder: Path, annotations: list[dict], categories: list[dict]) -> tuple[dict, str]:
    """The predictions.json to write into ``folder`` for this run's ``annotations``, and a note ("" if none).

    An earlier run into the same folder (other images, or the rest of an interrupted run) wrote panoptic PNGs that
    its predictions.json describes: the entries of those PNGs that still exist and that this run does not rewrite
    are kept when that table has the same categories (the same model's classes); otherwise it is replaced, and the
    note says how many earlier PNGs lost their entries."""
    import json

    path = folder / "predictions.json"
    # (this run's PNGs that another predict into the folder, of the other task, has deleted since: no entry)
    annotations = [a for a in annotations if (folder / a["file_name"]).is_file()]
    table = {"annotations": annotations, "categories": categories}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        entries = [a for a in earlier["annotations"] if isinstance(a, dict) and isinstance(a.get("file_name"), str)]
        same = earlier["categories"] == categories
    except FileNotFoundError:
        return table, ""
    except (OSError, ValueError, TypeError, KeyError) as e:  # (damaged, or not a table this command wrote)
        why = "not valid JSON" if isinstance(e, ValueError) else f"not a predictions table ({type(e).__name__})"
        written = {a["file_name"] for a in annotations}
        lost = sum(q.relative_to(folder).as_posix() not in written for q in folder.rglob("*_panoptic.png"))
        more = f"; the {lost} panoptic PNG(s) of earlier runs are no longer described in it" if lost else ""
        return table, f"{path}: {why}, replaced by this run's table{more}"
    rewritten = {a["file_name"] for a in annotations}
    kept = [a for a in entries if a["file_name"] not in rewritten and (folder / a["file_name"]).is_file()]
    if not kept:
        return table, ""
    if not same:
        return table, (f"{path}: replaced; the {len(kept)} panoptic PNG(s) of an earlier run with other categories "
                       "are no longer described in it")  # fmt: skip
    return {"annotations": kept + annotations, "categories": categories}, ""


def _gone(entry: object, folder: Path, file_names: set[str]) -> bool:
    """Whether a predictions.json entry describes a panoptic PNG of ours that is deleted or to be deleted."""
    name = entry.get("file_name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name.endswith("_panoptic.png"):
        return False  # (not an entry this command writes: left alone)
    return name in file_names or not (folder / name).is_file()


def drop_panoptic_entries(folder: Path, file_names: set[str]) -> None:
    """Remove the entries of these panoptic PNGs (deleted: their images were predicted again with another task),
    and of any PNG no longer there (a run killed between deleting PNGs and this), from ``folder/predictions.json``;
    the file goes when no entry is left."""
    import json

    from maskformer.fileio import atomic_write_text

    path = folder / "predictions.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        entries = [a for a in table["annotations"] if not _gone(a, folder, file_names)]
    except (OSError, ValueError, TypeError, KeyError):
        return  # (none, or not a table this command wrote)
    if not entries:
        path.unlink()
    elif len(entries) < len(table["annotations"]):
        atomic_write_text(path, json.dumps({**table, "annotations": entries}))
