"""mask2former.utils.download against a local server: cache, names, timeouts, checks, Drive."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from mask2former.checkpoint import M2FCheckpointer
from mask2former.utils import download
from mask2former.utils.download import DownloadError, RemoteFile
from tests.support.local_server import LocalServer, SilentServer, route_drive_to

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "home" / "cache"
    monkeypatch.setenv("INSTAFORMER_CACHE", str(root))
    return root


@pytest.fixture
def server():
    with LocalServer({"/w/model.pth": PAYLOAD, "/x.pth": b"x" * 100}) as s:
        yield s


def finished_files(root: Path) -> list[Path]:
    """Files under ``root`` outside the downloader's hidden temporary folders."""
    return [p for p in root.rglob("*") if p.is_file() and ".partial-" not in str(p)]


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("INSTAFORMER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_dir() == tmp_path / "xdg" / "instaformer"
    monkeypatch.setenv("INSTAFORMER_CACHE", str(tmp_path / "mine"))
    assert download.cache_dir() == tmp_path / "mine"


def test_download_with_progress_then_cache_hit_without_request(server, cache, capsys, caplog):
    caplog.set_level("INFO", logger="mask2former.utils.download")
    url = server.url("/w/model.pth")
    path = download.download(url)
    assert path.parent == cache and path.name.endswith("-model.pth")
    assert path.read_bytes() == PAYLOAD
    assert "100%" in capsys.readouterr().err  # the tqdm bar reached its total
    assert hashlib.sha256(PAYLOAD).hexdigest() in caplog.text
    assert server.requests == ["/w/model.pth"]
    assert download.download(url) == path
    assert server.requests == ["/w/model.pth"], "a cached file must not be requested again"
    assert finished_files(cache.parent.parent) == [path]


@pytest.mark.parametrize(
    "path",
    [
        "/../../../x.pth",
        "/..%2f..%2f..%2fx.pth",
        "/%2e%2e/%2e%2e/%2e%2e/x.pth",
        "/%2e%2e%2f%2e%2e%2fx.pth",
        "/..%252f..%252fx.pth",
        "/..%5c..%5cx.pth",
    ],
)
def test_dotdot_url_paths_stay_inside_the_cache(path, cache):
    url = f"http://127.0.0.1:9{path}"
    target = download.cache_path(url)
    assert target.parent == cache
    assert not target.name.startswith(".") and "/" not in target.name and ".." not in target.name


def test_dotdot_download_lands_inside_the_cache(server, cache, tmp_path):
    path = download.download(server.url("/../../../x.pth"))
    assert path.resolve().parent == cache.resolve()
    assert finished_files(tmp_path) == [path]


def test_silent_server_fails_within_the_timeout_naming_the_url(cache):
    with SilentServer() as silent:
        url = f"http://127.0.0.1:{silent.port}/w/model.pth"
        start = time.monotonic()
        with pytest.raises(DownloadError) as err:
            download.download(url, timeout=(1.0, 0.5))
        assert time.monotonic() - start < 5
    assert url in str(err.value)
    assert str(download.cache_path(url)) in str(err.value), "the message says where to put it"
    assert finished_files(cache) == []


def test_truncated_body_leaves_no_finished_file(server, cache):
    url = server.url("/short/w/model.pth")
    with pytest.raises(DownloadError, match="short/w/model.pth"):
        download.download(url)
    assert not download.cache_path(url).exists()
    assert list(cache.iterdir()) == [], "temporary folders are removed on failure"


def test_wrong_sha256_and_size_are_refused(server, cache):
    url = server.url("/w/model.pth")
    with pytest.raises(DownloadError, match="sha256"):
        download.download(RemoteFile(url, sha256="0" * 64))
    with pytest.raises(DownloadError, match="expected 5"):
        download.download(RemoteFile(url, size=5))
    assert finished_files(cache) == []
    good = RemoteFile(url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    assert download.download(good).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "url", ["http://example.com/w.pth", "ftp://127.0.0.1/w.pth", "http://10.0.0.1/w.pth"]
)
def test_only_https_or_loopback_http(url, cache):
    with pytest.raises(DownloadError, match="only https"):
        download.download(url)


def test_redirect_to_plain_http_elsewhere_is_refused(server, cache):
    url = server.url("/redirect?to=http://example.com/w.pth")
    with pytest.raises(DownloadError, match="example.com"):
        download.download(RemoteFile(url, file_name="w.pth"))
    followed = download.download(
        RemoteFile(server.url("/redirect?to=/w/model.pth"), file_name="m.pth")
    )
    assert followed.read_bytes() == PAYLOAD


def test_detectron2_names_go_through_the_downloader(server, cache, monkeypatch):
    monkeypatch.setattr(download, "DETECTRON2_MODEL_ZOO", server.url("/w/"))
    path = download.fetch("detectron2://model.pth")
    assert Path(path).parent == cache and Path(path).read_bytes() == PAYLOAD
    assert server.requests == ["/w/model.pth"]


def test_fetch_local_paths_unchanged_unknown_schemes_refused(tmp_path):
    assert download.fetch(str(tmp_path / "a.pth")) == str(tmp_path / "a.pth")
    with pytest.raises(DownloadError, match="unknown scheme 'file'"):
        download.fetch("file:///etc/passwd")


def test_drive_confirmation_page_is_followed(server, cache, monkeypatch):
    server.files["/drive/FILEID123"] = PAYLOAD
    route_drive_to(monkeypatch, server)
    url = "https://drive.google.com/uc?id=FILEID123&export=download"
    path = download.download(RemoteFile(url, file_name="released.pth"))
    assert path.read_bytes() == PAYLOAD and path.name.endswith("-released.pth")
    assert server.requests[0].startswith("/uc?id=FILEID123")
    assert server.requests[1].startswith("/download?") and "confirm=t" in server.requests[1]
    assert finished_files(cache) == [path]


def test_truncated_drive_download_leaves_no_finished_file(server, cache, monkeypatch):
    server.files["/drive/FILEID123"] = PAYLOAD
    route_drive_to(monkeypatch, server)
    url = "https://drive.google.com/uc?id=short-FILEID123&export=download"
    with pytest.raises(DownloadError, match="short-FILEID123") as err:
        download.download(RemoteFile(url, file_name="released.pth"))
    assert "incomplete" in str(err.value) and ".part" not in str(err.value)
    assert list(cache.iterdir()) == []


def test_checkpointer_loads_https_weights_through_the_downloader(server, cache, tmp_path):
    import torch
    from torch import nn

    model = nn.Linear(3, 2)
    source = tmp_path / "src.pth"
    torch.save({"model": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}}, source)
    server.files["/w/linear.pth"] = source.read_bytes()
    report = M2FCheckpointer(model, save_to_disk=False).load_weights(server.url("/w/linear.pth"))
    assert not any(report.values())
    assert torch.equal(model.weight, torch.ones(2, 3))
    assert download.cache_path(server.url("/w/linear.pth")).is_file()
