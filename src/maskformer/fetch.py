"""Files from the network: the model zoo's HTTP downloads and transformers Hub snapshots (``zoo`` caches and converts
them). Every failure is one ``CheckpointError`` line naming what was asked for, the address and the cause."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import CheckpointError

__all__ = ["TIMEOUT", "download", "etag_timeout", "hub_folder", "hub_snapshot"]

TIMEOUT = 60.0  # seconds without data before a download gives up


class _WriteFailed(Exception):
    """An ``OSError`` of writing the download (args[0]), told apart from the network's."""


class _Local:
    """``dest`` open for unbuffered writing (nothing left to fail at close); its errors as ``_WriteFailed``."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def __enter__(self) -> _Local:
        try:
            self.file = open(self.dest, "wb", buffering=0)  # noqa: SIM115 - closed by __exit__
        except OSError as e:
            raise _WriteFailed(e) from None
        return self

    def write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:  # (a raw write may take part of it)
                view = view[self.file.write(view) :]
        except OSError as e:
            raise _WriteFailed(e) from None

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def _advice(url: str, *, answered: bool) -> str:
    """What to do when ``url`` cannot be downloaded: check the mirror set, else give the file or set one (without
    internet, when no server ``answered``)."""
    if os.environ.get("MASKFORMER_ZOO_URL"):  # (already a mirror: "set a mirror" would point back at it)
        return f"check the mirror MASKFORMER_ZOO_URL={os.environ['MASKFORMER_ZOO_URL']}, or give the file itself"
    offline = "" if answered else "without internet, "
    return f"{offline}give the file {Path(url).name} itself or set MASKFORMER_ZOO_URL to a mirror"


def download(url: str, dest: Path, *, what: str) -> str:
    """Stream ``url`` to ``dest`` with a progress bar; the size must equal Content-Length when the server sends it.
    Returns the file's md5 (hex). Writing it may fail too (a full disk): an ``OSError`` naming the model's cache
    folder (``dest``'s grandparent), not a download failure."""
    from tqdm import tqdm

    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, _Local(dest) as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}", leave=False) as bar:
                while chunk := response.read1(1 << 20):  # (what has arrived: the bar moves also on a slow link)
                    f.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
        size = dest.stat().st_size
    except _WriteFailed as e:  # this machine's fault (a full disk), not the network's: named as a write error
        error = e.args[0]
        raise OSError(error.errno, error.strerror, str(dest.parent.parent)) from None
    except urllib.error.HTTPError as e:  # (urllib's reason for a redirect loop is three lines: one here)
        reason = " ".join(str(e.reason).split())
        advice = _advice(url, answered=True)
        raise CheckpointError(f"{what}: {url}: download failed (HTTP {e.code} {reason}); {advice}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no data for {TIMEOUT:.0f} s, timed out"
        if str(reason).startswith("unknown url type"):  # (a mirror given as a folder or host without its scheme)
            reason = f"{reason}: a mirror is an http://, https:// or file:///folder address"
        raise CheckpointError(f"{what}: {url}: download failed ({reason}); {_advice(url, answered=False)}") from None
    if total is not None and size != total:
        raise CheckpointError(f"{what}: {url}: download truncated ({size} of {total} bytes)")
    return md5.hexdigest()


def hub_snapshot(repo_id: str) -> Path:
    """The repo's snapshot folder (configs and weights), fetched or from huggingface_hub's cache.

    huggingface_hub looks the repo up without a time limit, so an endpoint that accepts the connection and never
    answers would hang for good. The same lookup is made here first with its metadata timeout
    (``HF_HUB_ETAG_TIMEOUT``, 10 s by default; file downloads have their own, ``HF_HUB_DOWNLOAD_TIMEOUT``); without an
    answer the cache is used, as huggingface_hub does offline."""
    from huggingface_hub import HfApi, constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "*.bin"]
    try:
        HfApi().repo_info(repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - not found, offline, refused, timed out: the cache may still have it
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except Exception:  # noqa: BLE001 - report why the Hub did not answer, not the cache miss
            raise e from None
    return Path(snapshot_download(repo_id, allow_patterns=patterns))  # the Hub answers: fetch as usual


def hub_folder(repo_id: str) -> Path:
    """The Hub id's snapshot folder, or one ``CheckpointError`` line saying why there is none."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{repo_id}: Hub ids need huggingface_hub (pip install 'maskformer[hf]')") from None
    try:
        return hub_snapshot(repo_id)
    except Exception as e:  # noqa: BLE001 - huggingface_hub's and its HTTP client's errors, named in one line
        text = str(e).strip() or type(e).__name__
        first = text.splitlines()[0].split(". ")[0].rstrip(".").removeprefix("Got: ")  # the rest is advice
        if "timed out" in first.lower() or type(e).__name__.endswith("Timeout"):
            first = f"no answer within {etag_timeout()} s"
        why = (f"not a file or folder here, and as a Hub id it could not be fetched from the Hub nor found in its cache"
               f" ({first[:200]}); without internet, give a folder of its files (save_pretrained) instead")  # fmt: skip
        raise CheckpointError(f"{repo_id}: {why}") from None


def etag_timeout() -> float:
    from huggingface_hub import constants

    return constants.HF_HUB_ETAG_TIMEOUT
