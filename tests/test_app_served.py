"""demo/app.py served on 127.0.0.1 and called through Gradio's own client, as a browser would:
every handled error reaches the status line, overrides are applied or refused, a random model is
marked, uploads that are no image are named, no temporary folder stays behind, requests queue,
the hosted mode takes zoo names and uploads only, and the host and port come from Gradio's
environment variables.

The "scene" config stands for the stand-in model of ``test_demo_predictor`` (things 10..13);
any other config builds the real model with ``build_predictor``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests
from PIL import Image
from test_app import OD_CONFIG, REPO, _free_port, app, scene_predictor

gradio_client = pytest.importorskip("gradio_client", reason="needs gradio's client")

SCENE = "scene"
STATUS = -1  # the status line is the last output of a run


class CountingPredictor:
    """The scene predictor, slowed down, counting how many calls run at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.predictor, self.image = scene_predictor()
        self.delay = delay
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __call__(self, image):
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        try:
            return self.predictor(image)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """``(predictor, path of the scene image)``."""
    counting = CountingPredictor(delay=0.3)
    path = tmp_path_factory.mktemp("upload") / "scene.png"
    Image.fromarray(counting.image).save(path)
    return counting, path


def _served(scene, hosted: bool):
    counting, _ = scene
    built = []

    def factory(config, weights, opts):
        built.append((config, weights, opts))
        return counting if config == SCENE or hosted else app.build_predictor(config, weights, opts)

    cache = app.PredictorCache("cpu", factory=factory, hosted=hosted)
    server = app.serve(cache, "127.0.0.1", _free_port(), block=False)
    client = gradio_client.Client(server.local_url, verbose=False, download_files=False)
    return server, client, built


@pytest.fixture(scope="module")
def local(scene):
    server, client, built = _served(scene, hosted=False)
    yield client, built, server
    server.close()


@pytest.fixture(scope="module")
def hosted(scene):
    server, client, built = _served(scene, hosted=True)
    yield client, built, server
    server.close()


def _run(client, image, choice=app.CUSTOM_LABEL, config=SCENE, weights="", overrides=""):
    upload = None if image is None else gradio_client.handle_file(str(image))
    return client.predict(upload, choice, 0.5, config, weights, overrides, api_name="/run")


def test_a_run_without_an_image_says_so(local):
    client, _, _ = local
    assert _run(client, None)[STATUS] == "Upload an image first."


def test_a_bad_config_is_shown(local, scene):
    client, _, _ = local
    status = _run(client, scene[1], config="no/such/config.yaml")[STATUS]
    assert status.startswith("**Error:** config file 'no/such/config.yaml' not found")


def test_a_missing_checkpoint_is_shown(local, scene, tmp_path):
    client, _, _ = local
    missing = tmp_path / "missing.pth"
    status = _run(client, scene[1], config=str(OD_CONFIG), weights=str(missing))[STATUS]
    assert status == f"**Error:** MODEL.WEIGHTS file not found: {missing}"


def test_an_oversized_image_is_refused_by_name(local, tmp_path):
    client, _, _ = local
    tall = tmp_path / "tall.png"
    Image.new("RGB", (4, 20_001)).save(tall)
    status = _run(client, tall)[STATUS]
    assert status.startswith("**Error:** the uploaded file tall.png cannot be used: image tall.png")
    assert "is 4x20001 pixels" in status and "over the limit" in status


@pytest.mark.parametrize(
    "name, data",
    [("garbage.png", b"this is not an image\n" * 10), ("empty.jpg", b"")],
)
def test_an_upload_that_is_no_image_is_named(local, tmp_path, name, data):
    client, _, _ = local
    path = tmp_path / name
    path.write_bytes(data)
    status = _run(client, path)[STATUS]
    assert status.startswith(f"**Error:** the uploaded file {name} cannot be used: ")
    assert "cannot decode image" in status
    assert tempfile.gettempdir() not in status and "gradio" not in status  # no server path


def test_a_model_weights_override_is_applied(local, scene, tmp_path):
    client, _, _ = local
    missing = tmp_path / "override.pth"
    status = _run(client, scene[1], config=str(OD_CONFIG), overrides=f"MODEL.WEIGHTS {missing}")
    assert status[STATUS] == f"**Error:** MODEL.WEIGHTS file not found: {missing}"


def test_a_random_model_is_marked(local, scene):
    client, _, _ = local
    status = _run(client, scene[1], config=str(OD_CONFIG))[STATUS]
    assert status.startswith("**Random weights:** no checkpoint was loaded")
    assert "the segments and orders below are meaningless" in status


def test_a_run_leaves_no_temporary_folder(local, scene, monkeypatch):
    client, _, _ = local
    made = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    result = _run(client, scene[1])
    assert result[STATUS].startswith("4 instance(s)")
    assert any("instaformer-app-" in folder for folder in made)
    assert [folder for folder in made if os.path.exists(folder)] == []
    written = json.loads(Path(result[-2]["path"]).read_text())  # the JSON offered for download
    assert written["input"] == "scene.png" and len(written["segments"]) == 4


def test_rapid_requests_queue_and_run_one_at_a_time(local, scene):
    client, _, server = local
    counting, image = scene
    counting.most = 0
    calls = counting.calls
    jobs = [
        client.submit(gradio_client.handle_file(str(image)), app.CUSTOM_LABEL, 0.5, SCENE, "", "",
                      api_name="/run")
        for _ in range(5)
    ]  # fmt: skip
    statuses = [job.result(timeout=60)[STATUS] for job in jobs]
    assert all(s.startswith("4 instance(s)") for s in statuses), statuses
    assert counting.calls - calls == 5 and counting.most == app.CONCURRENCY == 1
    assert server._queue.max_size == app.QUEUE_SIZE


def test_hosted_mode_offers_zoo_models_and_uploads_only(hosted, scene):
    client, built, server = hosted
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run"]
    assert [p["parameter_name"] for p in api["parameters"]] == ["image", "choice", "threshold"]
    upload = gradio_client.handle_file(str(scene[1]))
    status = client.predict(upload, "instaformer_od_swin_t", 0.5, api_name="/run")[STATUS]
    assert status.startswith("4 instance(s)")
    entry = app.model_zoo.get_entry("instaformer_od_swin_t")
    assert [b[:2] for b in built] == [(entry.config, "zoo://instaformer_od_swin_t")]
    for choice in (app.CUSTOM_LABEL, app.QUICKSTART_LABEL, "/etc/passwd", "https://x.org/w.pth"):
        status = client.predict(upload, choice, 0.5, api_name="/run")[STATUS]
        assert status.startswith("**Error:** this server is hosted: choose a model by its zoo")
    assert len(built) == 1
    assert server.max_file_size == app.HOSTED_MAX_UPLOAD_BYTES


def test_a_server_path_as_the_image_is_refused(hosted, scene):
    """The run takes Gradio's record of the upload undecoded; Gradio still refuses a record that
    names a file of the server instead of an upload."""
    _, _, server = hosted
    counting, path = scene  # an image on the server's disk, never uploaded
    calls = counting.calls
    url = server.local_url.rstrip("/") + "/gradio_api/call/run"
    record = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
    data = [record, "instaformer_od_swin_t", 0.5]
    event = requests.post(url, json={"data": data}, timeout=30).json()["event_id"]
    answer = requests.get(f"{url}/{event}", timeout=30).text
    assert answer.startswith("event: error") and counting.calls == calls


def test_hosted_mode_from_the_flag_or_a_space(monkeypatch):
    assert not app.hosted_mode(False, {})
    assert app.hosted_mode(True, {})
    assert app.hosted_mode(False, {"SPACE_ID": "someone/instaformer"})
    caches = []
    monkeypatch.setattr(app, "serve", lambda cache, host, port, **kw: caches.append(cache))
    monkeypatch.delenv("SPACE_ID", raising=False)
    app.main([])
    app.main(["--hosted"])
    monkeypatch.setenv("SPACE_ID", "someone/instaformer")
    app.main([])
    assert [cache.hosted for cache in caches] == [False, True, True]


def test_host_and_port_are_left_to_gradio_unless_given(monkeypatch):
    launched = []
    monkeypatch.setattr(app, "serve", lambda cache, host, port, **kw: launched.append((host, port)))
    app.main(["--device", "cpu"])
    app.main(["--host", "0.0.0.0", "--port", "8000"])
    assert launched == [(None, None), ("0.0.0.0", 8000)]


@pytest.mark.slow
def test_the_app_serves_where_gradio_environment_variables_say(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO / "demo" / "app.py"), "--device", "cpu"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    page = None
    deadline = time.monotonic() + 120
    try:
        while page is None and process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read()
            except OSError:
                time.sleep(0.5)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert page is not None, f"no page on port {port}: {err.decode()[-2000:]}"
    assert b"InstaFormer" in page
