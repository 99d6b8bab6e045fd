"""Pretrained models by name: the original model zoo, transformers Hub ids and local files, all to one local checkpoint.

``resolve_model(name_or_path)`` -> path of a checkpoint of this project (``.pt``) that ``load_model`` reads:

- a ``.pt`` file: itself;
- a zoo name (a config path under ``configs/`` without ``.yaml``, table ``resources/model_zoo.json``): the original
  ``.pkl`` is downloaded from ``MASKFORMER_ZOO_URL`` (default ``https://dl.fbaipublicfiles.com/maskformer``) into
  ``MASKFORMER_CACHE`` (default ``~/.cache/maskformer``), read with the restricted unpickler, converted with the
  table's config (every key consumed) and cached as ``model.pt`` beside it; the next call is a plain load;
- an original ``.pkl`` whose file name is in the table: converted with the table's config and cached by its path
  (``local/``, as a transformers folder; a changed file is converted again), never as the zoo name's weights;
- a transformers ``save_pretrained`` folder (cached by its path and its files' names, sizes and times), or a Hub id
  (``facebook/maskformer-swin-tiny-ade``; through ``huggingface_hub``, with its usual ``HF_HOME`` /
  ``HF_HUB_OFFLINE`` rules; cached with the commit it was converted from, and converted again when the repo has a
  newer one): converted, cached.

Every download goes to a temporary file that is renamed only when complete (its size checked against
Content-Length, its md5 against the prefix the zoo puts in every file name) and converted; a failure is one
``CheckpointError`` line naming the model, the URL and the cause, and leaves nothing in the cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .errors import CheckpointError, terminate_as_interrupt
from .fetch import download, hub_folder
from .fileio import SPECIAL_FILE, atomic_path, atomic_write_text, broken_link, special_file

__all__ = [
    "ZooEntry",
    "zoo_table",
    "resolve_model",
    "from_pretrained",
    "cache_dir",
    "config_file",
    "zoo_config",
    "zoo_url",
]

DEFAULT_ZOO_URL = "https://dl.fbaipublicfiles.com/maskformer"


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint: ``name`` (= config path without .yaml), ``path`` (relative to the zoo URL), task,
    dataset, backbone, the zoo's own metric. Hub entries have ``path=""`` and no metric; ``config`` names the
    original recipe a Hub repo was converted from when its test settings are not the dataset's defaults (the
    res640 ADE20K Swin-B/L: 640/2560 instead of 512/2048)."""

    name: str
    path: str
    task: str
    dataset: str
    backbone: str
    metric: str = ""
    reported: float | None = None
    config: str = ""

    @property
    def hub(self) -> bool:
        return not self.path

    @property
    def file_name(self) -> str:
        return Path(self.path).name


@cache
def zoo_table() -> dict[str, ZooEntry]:
    """Every name -> entry (the original zoo's checkpoints first, then the transformers Hub ids)."""
    data = json.loads(resources.files("maskformer").joinpath("resources", "model_zoo.json").read_text())
    table = {m["name"]: ZooEntry(**m) for m in data["models"]}
    table.update({h["name"]: ZooEntry(path="", **h) for h in data["hub"]})
    return table


def cache_dir() -> Path:
    # (~ expanded: a quoted MASKFORMER_CACHE='~/x' in a unit file or .env made a folder named "~" in every folder)
    return Path(os.environ.get("MASKFORMER_CACHE") or Path.home() / ".cache" / "maskformer").expanduser()


def zoo_url(entry: ZooEntry) -> str:
    return f"{(os.environ.get('MASKFORMER_ZOO_URL') or DEFAULT_ZOO_URL).rstrip('/')}/{entry.path}"


def _config_folders() -> list[Path]:
    """Where the zoo's configs are looked for: ``MASKFORMER_CONFIGS`` alone when set (a folder, else a one-line
    error), else the ``configs/`` beside ``src/`` in a source checkout, then ``./configs``."""
    env = os.path.expanduser(os.environ.get("MASKFORMER_CONFIGS", ""))
    if env:
        if not Path(env).is_dir():
            raise CheckpointError(
                f"MASKFORMER_CONFIGS={env}: not a folder (set it to a maskformer checkout's configs/)"
            )
        return [Path(env)]
    return [Path(__file__).resolve().parents[2] / "configs", Path("configs")]


def config_file(text: str | Path) -> Path:
    """A config path as the user gave it; a relative one that is not there is looked up in the zoo's config folders,
    so ``ade20k-150/maskformer_R50_bs16_160k.yaml`` works from any folder (a non-editable install with
    ``MASKFORMER_CONFIGS``). Returned as given when no folder holds it (``load_config`` then names it)."""
    path = Path(text)
    if path.exists() or path.is_absolute():
        return path
    try:
        folders = _config_folders()
    except CheckpointError:
        return path
    return next((folder / path for folder in folders if (folder / path).is_file()), path)


def zoo_config(name: str) -> Path:
    """The YAML of a zoo name (or of a Hub id's recipe): the first of ``_config_folders`` that holds it (a stray
    ``./configs`` of other files is passed over), else a one-line ``CheckpointError`` saying what to set."""
    folders = _config_folders()
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    where = f"neither in {folders[0]} nor in {folders[1]}" if len(folders) > 1 else f"not in {folders[0]}"
    raise CheckpointError(f"{name}: its config {name}.yaml is {where}: set MASKFORMER_CONFIGS to a maskformer "
                          "checkout's configs/ folder")  # fmt: skip


def cached_model_path(name: str) -> Path:
    """Where the converted checkpoint of a zoo name or Hub id lives in the cache."""
    return cache_dir() / ("hub" if "/" in name and name not in _zoo_names() else "zoo") / name / "model.pt"


def mirror_note_path(name: str) -> Path:
    """Beside a cached zoo model converted from a mirror's own file (not the released one): the note saying so."""
    return cached_model_path(name).with_name("not-the-released-file.txt")


def _zoo_names() -> set[str]:
    return {n for n, e in zoo_table().items() if not e.hub}


def resolve_model(name_or_path: str | Path) -> Path:
    """A local checkpoint for any model reference (module docstring); downloads and converts once."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"a model is a name, Hub id or path (str or Path), got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if not text.strip():
        raise CheckpointError("an empty model name: give a checkpoint, a name of `maskformer models` or a Hub id")
    path = Path(text)
    entries = zoo_table()
    by_file = {e.file_name: e for e in entries.values() if not e.hub}
    if path.is_file():
        if path.suffix == ".pkl" and path.name in by_file:  # (cached by this file, not as the zoo name's weights)
            stamp = hashlib.sha256(repr(_file_stamp(path)).encode()).hexdigest()[:16]
            return _local_converted(path, stamp, lambda out: _convert_pkl(
                path, zoo_config(by_file[path.name].name), out))  # fmt: skip
        if path.suffix == ".pkl":
            raise CheckpointError(
                f"{path}: an original .pkl that is not in the model zoo table (its config is unknown): convert it with"
                " `maskformer convert detectron2 FILE OUT.pt --config CONFIG`"
            )
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            run = [path / n for n in ("model_final.pt", "checkpoint_last.pt") if (path / n).is_file()]
            if run:
                raise CheckpointError(f"{path}: a training run's folder: give its checkpoint, e.g. {run[0]}")
            raise CheckpointError(f"{path}: a folder without config.json (not a transformers save_pretrained folder)")
        return _local_converted(path, _folder_stamp(path), lambda tmp: _convert_hf(path, tmp))
    if why := broken_link(path) or (SPECIAL_FILE if special_file(path) else None):  # (not "no such file")
        raise CheckpointError(f"{path}: {why}")
    entry = entries.get(text.strip().removesuffix(".yaml"))  # (" ade20k-150/..." pasted with a space is the name)
    if entry is not None and not entry.hub:
        return _converted(entry.name, lambda out: _download_and_convert(entry, out))
    zoo_folders = {n.split("/")[0] for n in _zoo_names()}
    if text.split("/")[0] in zoo_folders:
        import difflib

        close = difflib.get_close_matches(text, sorted(_zoo_names()), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise CheckpointError(f"{text}: no such model name ({hint}`maskformer models` lists them)")
    if path.parent.is_dir() and str(path.parent) != ".":  # a typo in a local path, not a Hub id
        import difflib

        close = difflib.get_close_matches(path.name, sorted(p.name for p in path.parent.iterdir()), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(str(path.parent / c) for c in close)}?)" if close else ""
        hub = text.count("/") == 1 and not path.suffix
        note = f"; a Hub id owner/name is looked up only when no folder {path.parent} is here" if hub else ""
        raise CheckpointError(f"{text}: no such file or folder{hint}{note}")
    if text.count("/") == 1 and not text.startswith((".", "/")) and not path.suffix:
        try:
            return _hub_converted(text.strip())
        except CheckpointError as e:  # (a typo of a listed name, e.g. ade20k/... or ...-adee, was asked of the Hub)
            import difflib

            close = difflib.get_close_matches(text.strip(), sorted(entries), n=1, cutoff=0.8)
            if not close or close[0] == text.strip():  # (a listed Hub id that could not be fetched: no "did you mean")
                raise
            raise CheckpointError(f"{e} (did you mean {close[0]}? `maskformer models` lists the names)") from None
    raise CheckpointError(
        f"{text}: no such file, and not a model name (`maskformer models` lists them; Hub ids look like owner/name)"
    )


def from_pretrained(name_or_path: str | Path, map_location: str = "cpu"):
    """The model for a zoo name, Hub id, ``.pt``, original ``.pkl`` or transformers folder, in eval mode, with its
    config (``model.cfg``) and class table (``model.class_meta``) attached."""
    from .engine.checkpoint import load_model

    return load_model(resolve_model(name_or_path), map_location)


# ----- cache, download, conversion -----


def _file_stamp(path: Path) -> tuple[int, int, int]:
    """A file as the cache sees it: size, modification and change times. The change time is set by every write and
    cannot be carried over, so weights of the same size copied in with an old modification time (``cp -p``,
    ``rsync -a``, ``tar x``) are new too; a rename or chmod converts once more, which costs only time."""
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _folder_stamp(folder: Path) -> str:
    """A folder's contents as the cache sees them: every file's name and ``_file_stamp``."""
    files = sorted((p.name, *_file_stamp(p)) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(repr(files).encode()).hexdigest()[:16]


def _local_converted(path: Path, stamp: str, make) -> Path:
    """The cached conversion of a local file or folder, keyed by its resolved path and ``stamp`` (of its
    ``_file_stamp``, or ``_folder_stamp``): a changed file is converted again, and one entry per path is kept."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    out = cache_dir() / "local" / f"{key}-{stamp}.pt"
    if out.is_file():
        if not damaged_copy(out):
            return out
        out.unlink()  # a damaged copy (cut by a full disk, say): its source is here, convert it again
    written = _write(out, make, what=str(path))
    for stale in out.parent.glob(f"{key}-*.pt"):  # the path's earlier contents
        if stale != out:
            stale.unlink(missing_ok=True)
    return written


def damaged_copy(out: Path) -> bool:
    """Whether a cached checkpoint is cut (a checkpoint is a zip archive whose directory is at the end), a member
    fails its checksum, or torch cannot open it (a changed byte in the archive's end record that Python's zipfile
    lets pass: ~20 ms for 165 MB, memory-mapped)."""
    import torch

    from .engine.checkpoint import damaged_archive

    try:
        if not zipfile.is_zipfile(out) or damaged_archive(out) is not None:
            return True
        torch.load(out, map_location="cpu", mmap=True, weights_only=True)
        return False
    except Exception:  # (whatever torch says: the copy is not a checkpoint it reads)
        return True


def _check_cached(out: Path, name: str) -> None:
    """A ``CheckpointError`` saying to delete the cached copy of ``name`` when it is ``damaged_copy``."""
    if not damaged_copy(out):
        return
    raise CheckpointError(f"{out}: the cached copy of {name} is damaged (not a complete checkpoint): delete it, "
                          "and the next use downloads and converts it again")  # fmt: skip


def _converted(name: str, make, where: str = "zoo") -> Path:
    out = cache_dir() / where / name / "model.pt"
    if out.is_file():
        _sweep(out.parent)  # (what killed downloads left beside it: a cached model never came back to a miss)
        _check_cached(out, name)
        noted = out.with_name(mirror_note_path(name).name)
        if noted.is_file():  # (said at every use, as at the download: the name's reported scores are not its own)
            print(f"maskformer: note: {name}: the cached copy {noted.read_text().strip()}", file=sys.stderr)
        return out
    return _write(out, make, what=name)


_STALE_SECONDS = 15 * 60  # a download or conversion whose files have not changed for this long was killed


def _sweep(folder: Path) -> None:
    """Remove what a killed download or conversion left in a cache folder (``.download.*`` folders, ``*.tmp``
    files): only when unchanged for ``_STALE_SECONDS``, so another process's download in progress stays."""
    import shutil

    if not folder.is_dir():
        return
    now = time.time()
    for left in folder.iterdir():
        if not (left.name.startswith(".download.") or (left.name.startswith(".") and left.name.endswith(".tmp"))):
            continue
        try:
            parts = [left, *left.rglob("*")] if left.is_dir() else [left]
            if now - max(p.stat().st_mtime for p in parts) < _STALE_SECONDS:
                continue
            shutil.rmtree(left) if left.is_dir() else left.unlink()
        except OSError:  # gone meanwhile, or not ours to remove
            continue


def _dangling_link(folder: Path) -> str:
    """'X links to T, which does not exist' for the first link on the way to ``folder`` whose target is missing (mkdir
    then says only "File exists"), else ''."""
    for p in [folder, *folder.parents]:
        if link := broken_link(p):
            return f"{p}: {link}"
    return ""


def _write(out: Path, make, *, what: str) -> Path:
    """Run ``make(tmp_path)`` and rename its result to ``out``; on any failure (or SIGTERM) remove what it left."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        why = _dangling_link(out.parent) or e.strerror or type(e).__name__
        raise CheckpointError(f"{what}: the converted copy cannot be cached in {out.parent} ({why}): set "
                              "MASKFORMER_CACHE to a folder you can write") from None  # fmt: skip
    _sweep(out.parent)
    try:
        with terminate_as_interrupt(), atomic_path(out, suffix=".pt.tmp") as tmp:
            make(tmp)
    except BaseException as e:
        folder, root = out.parent, cache_dir()
        while root in folder.parents and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # the name's folders (zoo/ade20k-150/swin/..., hub/owner/...) are left only when used
            folder = folder.parent
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # (what, and where else it can go)
            raise OSError(e.errno, f"{e.strerror} (for {what}: free space there, or set MASKFORMER_CACHE to a folder "
                          "with room)", e.filename) from None  # fmt: skip
        raise
    return out


def _download_and_convert(entry: ZooEntry, out: Path) -> None:
    url = zoo_url(entry)
    config = zoo_config(entry.name)  # (before the download: without it the file could not be converted)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".download.") as tmp:
        pkl = Path(tmp) / entry.file_name
        md5 = download(url, pkl, what=entry.name)
        named = re.search(r"_([0-9a-f]{6})\.pkl$", entry.file_name)  # the zoo names every file by its md5's prefix
        other = named is not None and not md5.startswith(named[1])
        why = f"its md5 begins {md5[:6]}, the released file's {named[1]}, as its name says" if other else ""
        if other and url.startswith(DEFAULT_ZOO_URL + "/"):
            raise CheckpointError(f"{entry.name}: {url}: the download is corrupt ({why}): try again, or give a copy "
                                  "you trust as a file")  # fmt: skip
        try:
            _convert_pkl(pkl, config, out)
        except CheckpointError as e:
            cause = str(e).replace(f"{pkl}: ", "").rstrip(".")  # (the temporary file is gone: its name says nothing)
            raise CheckpointError(f"{entry.name}: {url}: the download is not a usable checkpoint ({cause})") from None
        noted = out.parent / mirror_note_path(entry.name).name
        if other:  # a mirror (MASKFORMER_ZOO_URL) may serve its own files under the zoo's names: said, then used
            print(f"maskformer: note: {entry.name}: {url} is not the released file ({why}); using the mirror's",
                  file=sys.stderr)  # fmt: skip
            atomic_write_text(noted, f"came from {url}, not the released file ({why})\n")  # (`models`, each use)
        elif noted.is_file():
            noted.unlink()


def _convert_pkl(pkl: Path, config: Path, out: Path) -> None:
    from .engine.conversion import convert_detectron2

    convert_detectron2(pkl, out, config=config)


def _convert_hf(folder: Path, out: Path, config: Path | None = None) -> None:
    from .engine.conversion import convert_hf

    convert_hf(folder, out, config=config, same_model=False)  # (a recipe's config: for its test sizes)


def _hub_converted(repo_id: str) -> Path:
    """The converted checkpoint of a Hub id's current revision: the repo is looked up (or huggingface_hub's cache
    read, offline) and the cached conversion is used when it was made from that revision (its commit is noted beside
    it), else made again, so new weights pushed to the repo are seen. When the Hub cannot be reached and its cache has
    no snapshot, an earlier conversion is used as it is."""
    out = cached_model_path(repo_id)
    noted = out.parent / "revision"
    try:
        folder = hub_folder(repo_id)
    except CheckpointError:
        if out.is_file():
            _check_cached(out, repo_id)
            return out
        raise
    if out.is_file() and noted.is_file() and noted.read_text().strip() == folder.name:  # (snapshots/<commit>)
        if not damaged_copy(out):
            return out
        out.unlink()  # a damaged copy: its snapshot is here, so it is converted again (as a local folder's)
    entry = zoo_table().get(repo_id)
    recipe = zoo_config(entry.config) if entry is not None and entry.config else None
    try:
        _write(out, lambda tmp: _convert_hf(folder, tmp, config=recipe), what=repo_id)
    except CheckpointError as e:  # (named by the id asked for: the snapshot's path in the Hub cache alone was not)
        raise CheckpointError(f"{repo_id}: {e}") from None
    atomic_write_text(noted, folder.name)
    return out
