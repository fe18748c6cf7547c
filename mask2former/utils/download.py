"""The one downloader for remote weights: cache folder, safe names, timeouts, atomic files.

Every remote ``MODEL.WEIGHTS`` goes through :func:`fetch`: ``https://`` URLs and ``detectron2://``
model-zoo names; a package with its own names resolves them to a :class:`RemoteFile` and calls
:func:`download` (``zoo://NAME``: ``instaformer.model_zoo.fetch``). Google Drive files are fetched
with ``gdown`` (which follows Drive's large-file confirmation page); any other URL with
``requests``.

* Cache: ``$INSTAFORMER_CACHE``, default ``$XDG_CACHE_HOME/instaformer`` (``~/.cache/instaformer``).
  A URL is stored as ``<cache>/<first 16 hex digits of sha256(url)>-<sanitised file name>``: the
  name keeps only ``[A-Za-z0-9._-]`` of the last path segment (percent-decoded), so no URL can
  place a file outside the cache folder.
* Only ``https`` is accepted, and ``http`` to a loopback address (local test servers).
* Connect and read timeouts (:data:`DEFAULT_TIMEOUT`); a tqdm progress bar on stderr.
* The body is written inside a private temporary folder of the cache and moved to its final name
  only when complete and checked (size and sha256 where known): a killed or failed download
  leaves nothing under the final name. The sha256 of every download is logged.
* A failure raises :class:`DownloadError` naming the URL and the path where the file can be put
  by hand (then nothing is downloaded).
* A cached file that turns out bad (the wrong size here, or a file the checkpoint loader cannot
  read) is moved aside by :func:`set_aside` to ``<name>.bad-<YYYYmmdd-HHMMSS>``, with a log
  line, so that the next run downloads it again; the bad copy stays there to be inspected.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time
    from tqdm import tqdm

__all__ = [
    "DEFAULT_TIMEOUT",
    "DownloadError",
    "RemoteFile",
    "cache_dir",
    "cache_path",
    "check_url",
    "download",
    "fetch",
    "in_cache",
    "is_remote",
    "set_aside",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (10.0, 60.0)
"""Seconds: (connect, read). The read timeout bounds every wait for the next bytes."""

DETECTRON2_MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"
DETECTRON2_SCHEME = "detectron2://"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_CHUNK = 1 << 20
_MAX_REDIRECTS = 5
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class DownloadError(OSError):
    """A remote file could not be fetched or failed its check; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download.

    Attributes:
        url: ``https://`` URL (``http://`` only to a loopback address).
        file_name: name to store it under (sanitised); default: the last segment of the URL path.
            Its extension tells the loader the format (``.pkl`` pickles, else ``torch.load``).
        sha256: expected hex digest, or ``None`` when unknown.
        size: expected number of bytes, or ``None`` when unknown.
    """

    url: str
    file_name: str | None = None
    sha256: str | None = None
    size: int | None = None


def is_remote(path: str) -> bool:
    """True for ``http(s)://`` URLs and ``detectron2://`` names."""
    return path.startswith(("https://", "http://", DETECTRON2_SCHEME))


def cache_dir() -> Path:
    """``$INSTAFORMER_CACHE``, else ``$XDG_CACHE_HOME/instaformer``, else ``~/.cache/...``."""
    explicit = os.environ.get("INSTAFORMER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).expanduser() / "instaformer"


def _safe_name(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, no ``..``, no leading dot, at most 100 characters."""
    name = re.sub(r"\.{2,}", "_", _NAME_CHARS.sub("_", name))[-100:].lstrip(".")
    return name or "download"


def cache_path(url: str, file_name: str | None = None) -> Path:
    """Where :func:`download` keeps ``url``: a file directly inside :func:`cache_dir`."""
    if file_name is None:
        segment = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
        file_name = urllib.parse.unquote(segment)
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / f"{digest}-{_safe_name(os.path.basename(file_name))}"


def in_cache(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file directly inside :func:`cache_dir` (a download)."""
    return Path(path).resolve().parent == cache_dir().resolve()


def set_aside(path: str | os.PathLike) -> Path | None:
    """Rename the cached file ``path`` to ``<name>.bad-<YYYYmmdd-HHMMSS>`` (logged) so that the
    next :func:`download` fetches it again; ``None`` when another process moved it first."""
    source = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = source.with_name(f"{source.name}.bad-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = source.with_name(f"{source.name}.bad-{stamp}-{number}")
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return None
    logger.warning("moved %s aside to %s: the next run downloads it again", source, target)
    return target


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Refuse anything but ``https`` URLs and ``http`` to a loopback address.

    Raises:
        DownloadError: naming the URL.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return
    raise DownloadError(
        f"refusing to download {url!r}: only https:// URLs (and http:// to a loopback address) "
        "are accepted"
    )


def fetch(
    path: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT, progress: bool = True
) -> str:
    """The local file for ``path``: a local path unchanged, a remote one downloaded once.

    Args:
        path: local path, ``https://`` URL or ``detectron2://NAME``.
        timeout: (connect, read) seconds.
        progress: show a progress bar while downloading.

    Raises:
        DownloadError: the download failed, a check failed, or an unknown scheme.
    """
    if path.startswith(DETECTRON2_SCHEME):
        remote = RemoteFile(DETECTRON2_MODEL_ZOO + path.removeprefix(DETECTRON2_SCHEME))
        return str(download(remote, timeout=timeout, progress=progress))
    if path.startswith(("https://", "http://")):
        return str(download(RemoteFile(path), timeout=timeout, progress=progress))
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", path)
    if scheme:
        raise DownloadError(
            f"{path}: unknown scheme {scheme.group(1)!r}; known: https://, {DETECTRON2_SCHEME} "
            "(a package's own names, such as InstaFormer's zoo://, are resolved by that package)"
        )
    return path


def download(
    remote: RemoteFile | str,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download ``remote`` into the cache unless it is already there; return its path.

    A file already at :func:`cache_path` is used without any request (its size is checked when
    known: a copy of the wrong size is moved aside by :func:`set_aside` and fetched again).
    Otherwise the body goes to a temporary folder inside the cache, is checked against
    ``size``/``sha256`` and only then renamed into place.

    Raises:
        DownloadError: bad scheme, network failure or timeout, incomplete body, wrong size or
            sha256; the message names the URL and where to put the file by hand.
    """
    if isinstance(remote, str):
        remote = RemoteFile(remote)
    check_url(remote.url)
    target = cache_path(remote.url, remote.file_name)
    if target.is_file():
        if remote.size is None or target.stat().st_size == remote.size:
            return target
        logger.warning(
            "%s (cached copy of %s) has %d bytes, expected %d",
            target,
            remote.url,
            target.stat().st_size,
            remote.size,
        )
        set_aside(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        partial = workdir / target.name
        hasher = hashlib.sha256()
        try:
            if urllib.parse.urlsplit(remote.url).hostname in DRIVE_HOSTS:
                _get_drive(remote.url, partial, hasher, timeout, progress)
            else:
                _get_https(remote.url, partial, hasher, timeout, progress)
        except DownloadError as err:
            raise DownloadError(_by_hand(remote.url, target, str(err))) from err
        except _failures() as err:
            # gdown offers to resume from its partial file, which is deleted below
            reason = re.sub(r"\s*The received bytes are kept in .*", "", str(err), flags=re.S)
            raise DownloadError(
                _by_hand(remote.url, target, f"{type(err).__name__}: {reason}")
            ) from err
        _check(remote, partial, hasher.hexdigest(), target)
        _sync(partial)
        os.replace(partial, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info(
        "downloaded %s to %s (%d bytes, sha256 %s)",
        remote.url,
        target,
        target.stat().st_size,
        hasher.hexdigest(),
    )
    return target


def _failures() -> tuple[type[BaseException], ...]:
    """What a failed transfer raises: OS/network errors (``requests``' are OSErrors) and gdown's."""
    from gdown.exceptions import DownloadError as GdownError

    return (OSError, GdownError)


def _sync(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed into place: after a crash the cache holds
    the whole file or none, never an empty or partial one under the final name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _by_hand(url: str, target: Path, reason: str) -> str:
    return (
        f"could not download {url}: {reason}\n"
        f"Download it by other means and put it at {target} (or pass the local file as "
        "MODEL.WEIGHTS / weights=...); set INSTAFORMER_CACHE to use another cache folder."
    )


def _check(remote: RemoteFile, partial: Path, sha256: str, target: Path) -> None:
    size = partial.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DownloadError(
            _by_hand(remote.url, target, f"got {size} bytes, expected {remote.size}")
        )
    if remote.sha256 is not None and sha256 != remote.sha256.lower():
        raise DownloadError(
            _by_hand(remote.url, target, f"sha256 {sha256} does not match {remote.sha256}")
        )


def _progress_bar(total: int | None, name: str, enabled: bool) -> tqdm:
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not enabled
    )


def _get_https(
    url: str, partial: Path, hasher, timeout: tuple[float, float], progress: bool
) -> None:
    """Plain HTTPS with ``requests``: redirects re-checked by :func:`check_url`."""
    import requests

    with requests.Session() as session:
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            response = session.get(
                current,
                stream=True,
                timeout=timeout,
                allow_redirects=False,
                headers={"Accept-Encoding": "identity"},
            )
            if not response.is_redirect:
                break
            current = urllib.parse.urljoin(current, response.headers["Location"])
            response.close()
            check_url(current)
        else:
            raise DownloadError(f"more than {_MAX_REDIRECTS} redirects")
        with response:
            if response.status_code != 200:
                raise DownloadError(f"HTTP status {response.status_code} from {current}")
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            received = 0
            with open(partial, "wb") as f, _progress_bar(total, partial.name, progress) as bar:
                for chunk in response.iter_content(_CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(f"incomplete body: {received} of {total} bytes")


def _get_drive(
    url: str, partial: Path, hasher, timeout: tuple[float, float], progress: bool
) -> None:
    """Google Drive through ``gdown``, which follows the large-file confirmation page.

    Cookies stay in memory (``use_cookies=False``: nothing is written outside the cache);
    gdown's own output is silenced and its progress callback drives our bar.
    """
    import gdown

    bars: list[tqdm] = []  # opened at the first bytes: no bar when Drive cannot be reached

    def report(done: int, total: int | None) -> None:
        if not bars:
            bars.append(_progress_bar(total, partial.name, progress))
        bars[0].update(done - bars[0].n)

    try:
        gdown.download(
            url,
            str(partial),
            quiet=True,
            use_cookies=False,
            progress=report,
            hasher=hasher,
            timeout=timeout,
        )
    finally:
        for bar in bars:
            bar.close()
    if not partial.is_file():
        raise DownloadError("gdown returned without writing the file")
