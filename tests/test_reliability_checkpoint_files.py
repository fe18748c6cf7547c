"""Weight files that are not weights: each is named for what it is, and a bad cached download is
moved aside so that the next run fetches it again.

Each case gives the loader a file that is not a checkpoint (an HTML page, a text file, random
bytes, a cut zip or pickle), as ``.pth`` (``torch.load(weights_only=True)``) and as ``.pkl`` (the
restricted unpickler), and checks the message and that a local file is left as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from local_server import LocalServer
from torch import nn

from mask2former.checkpoint import CheckpointError, M2FCheckpointer, UnsafeCheckpointError
from mask2former.utils import download

PORTAL = (
    b"<!DOCTYPE html>\n<html><head><title>Hotel WiFi - Sign in</title></head>\n"
    b"<body><form action='/login'><input name='room'></form></body></html>\n"
)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(path: Path) -> str:
    """Load ``path`` as weights; the message of the refusal (never an unsafe-code one), after
    checking that the file is left byte-identical."""
    before = _digest(path)
    with pytest.raises(CheckpointError) as info:
        M2FCheckpointer(Model()).load_weights(str(path))
    assert not isinstance(info.value, UnsafeCheckpointError), str(info.value)
    assert "code" not in str(info.value)
    assert path.is_file() and _digest(path) == before
    return str(info.value)


def _good_pth(path: Path) -> Path:
    torch.save({"model": Model().state_dict()}, path)
    return path


def _good_pkl(path: Path) -> Path:
    state = {k: v.numpy() for k, v in Model().state_dict().items()}
    path.write_bytes(pickle.dumps({"model": state}, protocol=2))
    return path


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_an_html_page_is_called_an_html_page(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(PORTAL)
    message = _refused(path)
    assert message.startswith(f"cannot read checkpoint file {path} ({len(PORTAL)} bytes):")
    assert "an HTML page titled 'Hotel WiFi - Sign in'" in message
    assert "captive portal" in message


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
@pytest.mark.parametrize(
    "text",
    [b"hello world\n", b"config: 1\nother: 2\n", b"epoch 1 loss 0.5\n", b'{"model": 1}'],
    ids=["KeyError-101", "pickle-GLOBAL-opcode", "IndexError", "json"],
)
def test_a_text_file_is_called_a_text_file(tmp_path, suffix, text):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(text)
    message = _refused(path)
    first_line = text.decode().splitlines()[0]
    assert f"{path} ({len(text)} bytes): it is a text file, not weights" in message
    assert f"it begins {first_line!r}" in message


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_random_bytes_are_neither_zip_nor_pickle(tmp_path, suffix):
    data = bytes([0xAF, 0x13, 0x00, 0x9C]) + os.urandom(4092)
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(data)
    message = _refused(path)
    assert f"{path} (4096 bytes): it is neither a PyTorch (zip) file nor a pickle" in message
    assert "it begins with the bytes af 13 00 9c" in message


def test_a_cut_zip_checkpoint_is_called_truncated(tmp_path):
    good = _good_pth(tmp_path / "good.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(good[: len(good) // 2])
    message = _refused(path)
    assert f"{path} ({len(good) // 2} bytes): it is a truncated or damaged zip" in message
    assert "its end (the zip directory) is missing" in message


@pytest.mark.parametrize("make", [_good_pkl, _good_pth], ids=["pkl", "legacy-pth"])
def test_a_cut_pickle_is_called_truncated(tmp_path, make):
    source = tmp_path / ("good.pkl" if make is _good_pkl else "good.pth")
    if make is _good_pth:  # torch's pre-1.6 format: pickles, no zip
        torch.save({"model": Model().state_dict()}, source, _use_new_zipfile_serialization=False)
    else:
        make(source)
    good = source.read_bytes()
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(good[: len(good) // 2])
    message = _refused(path)
    assert f"{path} ({len(good) // 2} bytes): it is a truncated or damaged pickle" in message


def test_weights_with_code_are_still_refused_as_unsafe(tmp_path):
    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "code.pth"
    torch.save({"model": Model().state_dict(), "extra": Code()}, path)
    with pytest.raises(UnsafeCheckpointError, match="contains Python objects"):
        M2FCheckpointer(Model()).load_weights(str(path))
    pkl = tmp_path / "code.pkl"
    pkl.write_bytes(pickle.dumps({"model": {}, "x": Code()}, protocol=0))
    with pytest.raises(UnsafeCheckpointError, match=r"global '(posix|os|nt)\.getcwd'"):
        M2FCheckpointer(Model()).load_weights(str(pkl))


def test_a_bad_cached_download_is_named_moved_aside_and_fetched_again(
    tmp_path, monkeypatch, caplog
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("INSTAFORMER_CACHE", str(cache))
    caplog.set_level(logging.WARNING, logger="mask2former")
    good = _good_pth(tmp_path / "good.pth").read_bytes()
    with LocalServer({"/w/model.pth": PORTAL}) as server:
        url = server.url("/w/model.pth")
        cached = download.cache_path(url)
        with pytest.raises(CheckpointError) as info:
            M2FCheckpointer(Model()).load_weights(url)
        message = str(info.value)
        assert not isinstance(info.value, UnsafeCheckpointError)
        assert f"cannot read checkpoint file {cached} ({len(PORTAL)} bytes)" in message
        assert "an HTML page" in message
        aside = [p for p in cache.iterdir() if p.name.startswith(cached.name + ".bad-")]
        assert len(aside) == 1 and re.fullmatch(r".*\.bad-\d{8}-\d{6}", aside[0].name)
        assert aside[0].read_bytes() == PORTAL and not cached.exists()
        assert f"a download cached at {cached}; moved aside to {aside[0]}" in message
        assert "the next run downloads it again" in message
        assert f"moved {cached} aside to {aside[0]}" in caplog.text

        server.files["/w/model.pth"] = good
        M2FCheckpointer(Model()).load_weights(url)
        assert server.requests == ["/w/model.pth", "/w/model.pth"]
        assert cached.read_bytes() == good


def test_a_cached_file_of_the_wrong_size_is_moved_aside_and_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTAFORMER_CACHE", str(tmp_path / "cache"))
    with LocalServer({"/x.pth": b"x" * 100}) as server:
        remote = download.RemoteFile(server.url("/x.pth"), size=100)
        cached = download.cache_path(remote.url)
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"x" * 40)  # a copy cut short, put there by hand
        assert download.download(remote).read_bytes() == b"x" * 100
        assert server.requests == ["/x.pth"]
        (aside,) = cached.parent.glob(cached.name + ".bad-*")
        assert aside.read_bytes() == b"x" * 40
