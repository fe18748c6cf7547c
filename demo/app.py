"""Interactive viewer of occlusion and depth orders (Gradio): ``python demo/app.py``.

Upload a photo (or pick an example), choose a model, and explore the prediction: the panoptic
overlay; click an instance (or pick it from the list) to see what it occludes, what occludes it,
and what is closer or farther, with probabilities; slide through the depth layers from the front
to the back; the occlusion graph and the depth ranking; the JSON that ``demo/demo.py`` writes.

    pip install ".[app]"
    python demo/app.py [--host 127.0.0.1] [--port 7860] [--device cpu] [--hosted]

Where it serves: ``--host`` / ``--port`` when given, else Gradio's ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT`` (a Hugging Face Space sets them), else 127.0.0.1 and the first free port
from 7860.

Models: the quick-start model when ``output/quickstart`` holds one (the default then), the
released InstaFormer models by zoo name (downloaded once into the cache, with progress), or any
config file with a checkpoint (an empty checkpoint = random initialisation, to try the page; its
results are marked as meaningless). ``MODEL.WEIGHTS`` among the overrides takes the place of an
empty checkpoint field; with a filled one, or with a zoo model, it is refused.

Hosted mode (``--hosted``, and by itself where ``SPACE_ID`` is set, i.e. in a Hugging Face
Space): visitors choose a released model by its zoo name and upload images, nothing else. The
config, checkpoint and override fields are not on the page and are refused by the server, so no
visitor can make it open a server path or download a URL; uploads are limited to
``HOSTED_MAX_UPLOAD_BYTES``.

Requests wait in Gradio's queue (at most ``QUEUE_SIZE``; ``CONCURRENCY`` predictions run at
once). The app keeps no temporary folder of its own: each run's JSON goes to Gradio's cache,
whose files (uploads, pictures, JSON) Gradio deletes on the ``DELETE_CACHE`` schedule and at
shutdown. Everything the page computes lives in :mod:`instaformer.apps.interactive`; this file
is the layout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from instaformer import model_zoo
from instaformer.apps.interactive import (
    View,
    instance_choices,
    parse_choice,
    ranking_rows,
    read_upload,
    relation_rows,
    weights_warning,
)
from instaformer.config import ConfigError, resolve_config_file
from instaformer.predictor import Predictor
from mask2former.utils.download import DownloadError

QUICKSTART = Path("output") / "quickstart"
QUICKSTART_CONFIG = "synthetic/instaformer_od_tiny.yaml"
QUICKSTART_LABEL = "quick-start model (output/quickstart)"
CUSTOM_LABEL = "config file + checkpoint"
DEFAULT_ZOO_MODEL = "instaformer_od_swin_t"  # the default without a quick-start model
RELATION_HEADERS = ["instance", "class", "relation to the selected one", "probability"]
RANKING_HEADERS = ["rank (1 = closest)", "instance", "class", "score"]
LAUNCH_TRIES = 3  # see serve()
PICTURE_HEIGHT = 420  # display height of the result pictures (pixels; small images scaled up)
HOSTED_ENV = "SPACE_ID"  # set in every Hugging Face Space: the app runs hosted there
HOSTED_MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # largest upload a hosted app accepts (bytes)
CONCURRENCY = 1  # runs computed at once (each holds a model and an image in memory)
QUEUE_SIZE = 16  # requests waiting at most; Gradio tells the next ones that the queue is full
DELETE_CACHE = (600, 3600)  # seconds: every 10 minutes Gradio deletes its files over 1 hour old
# What a run reports in the status line (CheckpointError and DataError are ValueErrors).
RUN_ERRORS = (ConfigError, DownloadError, KeyError, ValueError, OSError, RuntimeError)


def hosted_mode(flag: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Hosted when asked (``--hosted``) or inside a Hugging Face Space (``SPACE_ID`` set)."""
    return flag or bool(environ.get(HOSTED_ENV))


def model_choices(quickstart: Path = QUICKSTART, hosted: bool = False) -> list[str]:
    """The model picker's entries: the quick-start model first when it has been trained, the
    released InstaFormer models by zoo name (downloaded on first use), a config + checkpoint.
    Hosted: the zoo names only."""
    zoo = [e.name for e in model_zoo.ENTRIES if e.family == "instaformer"]
    if hosted:
        return zoo
    choices = [*zoo, CUSTOM_LABEL]
    if (quickstart / "train" / "model_final.pth").is_file():
        choices.insert(0, QUICKSTART_LABEL)
    return choices


def build_predictor(config: str, weights: str, opts: list[str]) -> Predictor:
    """A predictor from a config (path or name under configs/), a checkpoint (empty = random
    initialisation) and ``KEY VALUE`` overrides."""
    return Predictor.from_config_file(resolve_config_file(config), weights=weights, opts=opts)


class PredictorCache:
    """Builds each (config, checkpoint, overrides) predictor once and keeps the last ``size``.

    Args:
        device: torch device of the models.
        factory: ``(config, weights, opts) -> Predictor``; default :func:`build_predictor`.
        size: how many predictors stay in memory.
        hosted: take zoo names only (:func:`hosted_mode`); the page is built to match.
    """

    def __init__(
        self,
        device: str,
        factory: Callable[[str, str, list[str]], Predictor] = build_predictor,
        size: int = 2,
        hosted: bool = False,
    ) -> None:
        self.device = device
        self.factory = factory
        self.size = size
        self.hosted = hosted
        self._cache: dict[tuple, Predictor] = {}
        self._lock = threading.Lock()

    def model_fields(
        self, choice: str, config: str, weights: str, overrides: str
    ) -> tuple[str, str, list[str]]:
        """The config, the checkpoint and the other overrides that the page's fields ask for.

        ``MODEL.WEIGHTS`` among the overrides is the checkpoint when the checkpoint field is
        empty; it is refused beside a filled field or a zoo or quick-start model, which come with
        their own.

        Raises:
            ValueError: hosted and anything but a zoo name; no config; an odd number of override
                words; ``MODEL.WEIGHTS`` given twice.
        """
        words = overrides.split()
        if self.hosted and (
            choice not in model_choices(hosted=True) or config.strip() or weights.strip() or words
        ):
            raise ValueError(
                "this server is hosted: choose a model by its zoo name and upload an image "
                "(config files, checkpoints and overrides are not accepted)"
            )
        if len(words) % 2:
            raise ValueError(f"config overrides must be KEY VALUE pairs; got {overrides!r}")
        pairs = list(zip(words[::2], words[1::2], strict=True))
        given = [value for key, value in pairs if key == "MODEL.WEIGHTS"]
        rest = [word for key, value in pairs if key != "MODEL.WEIGHTS" for word in (key, value)]
        if choice == CUSTOM_LABEL:
            if not config.strip():
                raise ValueError("choose a config file (a path or a name under configs/)")
            if weights.strip() and given:
                raise ValueError(
                    f"MODEL.WEIGHTS is given twice: the checkpoint field {weights.strip()!r} "
                    f"and the override {given[-1]!r}; keep one"
                )
            return config.strip(), weights.strip() or (given[-1] if given else ""), rest
        if given:
            raise ValueError(
                f"{choice} comes with its own weights; to load {given[-1]!r}, choose "
                f"'{CUSTOM_LABEL}' with a config file"
            )
        if choice == QUICKSTART_LABEL:
            return QUICKSTART_CONFIG, str(QUICKSTART / "train" / "model_final.pth"), rest
        entry = model_zoo.get_entry(choice)
        return entry.config, entry.weights, rest

    def get(
        self,
        choice: str,
        config: str,
        weights: str,
        threshold: float,
        overrides: str = "",
        progress: Any = None,
    ) -> Predictor:
        """The predictor of the page's model fields (built on first use).

        Raises:
            ValueError: refused fields (see :meth:`model_fields`).
            ConfigError: a bad config file or override.
        """
        config, weights, words = self.model_fields(choice, config, weights, overrides)
        opts = ["MODEL.DEVICE", self.device]
        opts += ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(float(threshold)), *words]
        key = (config, weights, tuple(opts))
        with self._lock:
            if key not in self._cache:
                if progress is not None:
                    progress(0.1, desc="building the model, downloading its weights on first use")
                self._cache[key] = self.factory(config, weights, opts)
                while len(self._cache) > self.size:
                    self._cache.pop(next(iter(self._cache)))
            return self._cache[key]


def _relations(view: View | None, index: int | None) -> tuple:
    """Outputs of a selection: occlusion picture, depth picture, relations table, status."""
    if view is None or index is None:
        return None, None, gr.update(value=[]), "Select an instance: click it or pick it."
    pictures = view.select(index)
    seg = view.result.segments[index]
    rows = relation_rows(view.result, index)
    status = f"Selected #{seg.id} {seg.class_name}: {len(rows)} relation(s)."
    return pictures.get("occlusion"), pictures.get("depth"), gr.update(value=rows), status


def _picture(label: str, elem_id: str) -> gr.Image:
    """An output picture of the page (PNG, scaled to ``PICTURE_HEIGHT``)."""
    return gr.Image(
        label=label, interactive=False, format="png", height=PICTURE_HEIGHT, elem_id=elem_id
    )


def build_app(cache: PredictorCache) -> gr.Blocks:
    """The page. Handlers call :class:`~instaformer.apps.interactive.View`; errors go to the status
    line, never to a dead page. ``cache.hosted``: no config, checkpoint or override fields."""
    examples = _example_images()
    choices = model_choices(hosted=cache.hosted)
    title = "InstaFormer: occlusion and depth orders"
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=DELETE_CACHE) as app:
        state = gr.State(None)
        gr.Markdown(
            f"# {title}\nUpload a photo, run the model, then click an instance in the panoptic "
            "picture."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="image", elem_id="input-image")
                default = choices[0] if choices[0] == QUICKSTART_LABEL else DEFAULT_ZOO_MODEL
                model = gr.Dropdown(choices, value=default, label="model", elem_id="model")
                fields: list[gr.components.Component] = []  # config, checkpoint, overrides
                if cache.hosted:
                    gr.Markdown("The released InstaFormer models, downloaded on first use.")
                else:
                    fields = [
                        gr.Textbox(
                            label="config file (path or name under configs/)",
                            value=QUICKSTART_CONFIG,
                            elem_id="config",
                        ),
                        gr.Textbox(
                            label="checkpoint (empty = random initialisation)", elem_id="weights"
                        ),
                    ]
                    gr.Markdown(f"The config file and checkpoint are used with *{CUSTOM_LABEL}*.")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.8, step=0.05, label="min. segment score", elem_id="score"
                )
                if not cache.hosted:
                    fields.append(
                        gr.Textbox(label="config overrides (KEY VALUE ...)", elem_id="overrides")
                    )
                run = gr.Button("Run", variant="primary", elem_id="run")
                if examples:
                    gr.Examples(examples, inputs=image, label="examples")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image and press Run.", elem_id="status")
                panoptic = _picture("panoptic (click an instance)", "panoptic")
                instance = gr.Dropdown([], label="selected instance", elem_id="instance")
        with gr.Row():
            occlusion_view = _picture("occlusion relations", "occ-view")
            depth_view = _picture("depth relations", "depth-view")
        relations = gr.Dataframe(
            headers=RELATION_HEADERS, label="relations", interactive=False, elem_id="relations"
        )
        with gr.Row():
            with gr.Column():
                layer = gr.Slider(0, 1, value=0, step=1, label="depth layers", elem_id="layers")
                layers_view = _picture("front to back", "layers-view")
            graph = _picture("occlusion graph", "graph")
        ranking = gr.Dataframe(
            headers=RANKING_HEADERS, label="depth ranking", interactive=False, elem_id="ranking"
        )
        result_json = gr.File(label="result JSON (as demo/demo.py writes it)", elem_id="json")

        def shown(message: str, view: View | None = None) -> dict:
            """Every output of a run, keyed by component: the view's, or cleared without one."""
            if view is None:
                return {
                    state: None,
                    panoptic: None,
                    instance: gr.update(choices=[], value=None),
                    layer: gr.update(minimum=0, maximum=1, value=0),
                    layers_view: None,
                    graph: None,
                    ranking: gr.update(value=[]),
                    result_json: None,
                    status: message,
                }
            steps = len(view.result.segments) if view.result.depth_ranking is not None else 0
            with tempfile.TemporaryDirectory(prefix="instaformer-app-") as folder:
                path = Path(folder) / f"{Path(view.source or 'result').stem}.json"
                path.write_text(view.to_json())
                kept = result_json.move_resource_to_block_cache(path)  # Gradio's copy
            return {
                state: view,
                panoptic: view.panoptic(),
                instance: gr.update(choices=instance_choices(view.result), value=None),
                layer: gr.update(minimum=0, maximum=max(1, steps), value=steps),
                layers_view: view.depth_layers(steps),
                graph: view.occlusion_graph(),
                ranking: gr.update(value=ranking_rows(view.result)),
                result_json: kept,
                status: message,
            }

        def run_model(
            image: dict | None,
            choice: str,
            threshold: float,
            config: str,
            weights: str,
            overrides: str,
            progress: gr.Progress,
        ) -> dict:
            if not image or not image.get("path"):
                return shown("Upload an image first.")
            try:
                array, name = read_upload(image["path"])
                predictor = cache.get(choice, config, weights, threshold, overrides, progress)
                progress(0.5, desc="predicting")
                view = View.predict(predictor, array, source=name)
            except RUN_ERRORS as err:
                return shown(f"**Error:** {err}")
            tasks = ", ".join(view.tasks) or "none"
            found = f"{len(view.result.segments)} instance(s), tasks: {tasks}. Click one."
            return shown(" ".join(filter(None, (weights_warning(predictor), found))), view)

        # The inputs come as sent (preprocess=False below): the image as Gradio's file record
        # of the upload, undecoded, so that the project's reader names a file that is no image
        # (Gradio's own decoding fails first, with its generic error). Gradio has checked that
        # the file is an upload; the model fields are checked by the cache.
        # Gradio passes the progress tracker where the handler's signature asks for it, and
        # names the API's parameters after the handler's: one handler per set of fields.
        def on_run_hosted(
            image: dict | None,
            choice: str,
            threshold: float,
            progress=gr.Progress(track_tqdm=True),  # noqa: B008
        ) -> dict:
            return run_model(image, choice, threshold, "", "", "", progress)

        def on_run(
            image: dict | None,
            choice: str,
            threshold: float,
            config: str,
            weights: str,
            overrides: str,
            progress=gr.Progress(track_tqdm=True),  # noqa: B008
        ) -> dict:
            return run_model(image, choice, threshold, config, weights, overrides, progress)

        def on_click(view, evt: gr.SelectData):
            if view is None:
                return gr.update(), None, None, gr.update(value=[]), "Run the model first."
            x, y = (int(v) for v in evt.index[:2])
            index = view.instance_at(x, y)
            if index is None:
                return (gr.update(value=None), *_relations(view, None))
            return (gr.update(value=instance_choices(view.result)[index]), *_relations(view, index))

        def on_pick(view, choice):
            return _relations(view, None if view is None else parse_choice(view.result, choice))

        def on_layer(view, step):
            return None if view is None else view.depth_layers(int(step))

        run.click(
            on_run_hosted if cache.hosted else on_run,
            [image, model, threshold, *fields],
            [state, panoptic, instance, layer, layers_view, graph, ranking, result_json, status],
            api_name="run",
            preprocess=False,
        )
        panoptic.select(
            on_click, [state], [instance, occlusion_view, depth_view, relations, status]
        )
        instance.input(on_pick, [state, instance], [occlusion_view, depth_view, relations, status])
        layer.change(on_layer, [state, layer], [layers_view])
    return app


def _example_images() -> list[str]:
    """A few validation images of the quick start's synthetic dataset, when it was written."""
    val = QUICKSTART / "datasets" / "synthetic_instaorder" / "coco" / "val2017"
    return [str(p) for p in sorted(val.glob("*.jpg"))[:4]] if val.is_dir() else []


def serve(
    cache: PredictorCache, host: str | None = None, port: int | None = None, block: bool = True
) -> gr.Blocks:
    """Build the page and serve it on ``http://host:port``; ``None`` leaves the host and port to
    Gradio (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, else 127.0.0.1 and the first free
    port from 7860). ``block=False`` returns at once (the server runs in a thread until
    ``app.close()``).

    Gradio gives up when its own first request to the page takes over 3 s (it then asks for a
    public share link); on a busy machine that happens while the server is fine, so the launch
    is tried up to ``LAUNCH_TRIES`` times before the error is raised.
    """
    app = build_app(cache).queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    theme = gr.themes.Default(font=["sans-serif"], font_mono=["monospace"])  # no web fonts
    for attempt in range(1, LAUNCH_TRIES + 1):
        try:
            app.launch(
                server_name=host,
                server_port=port,
                theme=theme,
                prevent_thread_lock=not block,
                quiet=True,
                max_file_size=HOSTED_MAX_UPLOAD_BYTES if cache.hosted else None,
            )
            break
        except ValueError as err:
            app.close()
            if "localhost is not accessible" not in str(err) or attempt == LAUNCH_TRIES:
                raise
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--host", help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        help="port to serve on (default: $GRADIO_SERVER_PORT, else the first free from 7860)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    parser.add_argument(
        "--hosted",
        action="store_true",
        help="for a public server: zoo models and uploads only, no server paths or URLs (on "
        f"by itself where ${HOSTED_ENV} is set, as in a Hugging Face Space)",
    )
    args = parser.parse_args(argv)
    cache = PredictorCache(args.device, hosted=hosted_mode(args.hosted))
    serve(cache, args.host, args.port)


if __name__ == "__main__":
    main()
