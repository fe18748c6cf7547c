"""Interactive viewer of occlusion and depth orders (Gradio): ``python demo/app.py``.

Upload a photo (or pick an example), choose a model, and explore the prediction: the panoptic
overlay; click an instance (or pick it from the list) to see what it occludes, what occludes it,
and what is closer or farther, with probabilities; slide through the depth layers from the front
to the back; the occlusion graph and the depth ranking; the JSON that ``demo/demo.py`` writes.

    pip install ".[app]"
    python demo/app.py [--port 7860] [--host 127.0.0.1] [--device cpu]

Models: the quick-start model when ``output/quickstart`` holds one (the default then), the
released InstaFormer models by zoo name (downloaded once into the cache, with progress), or any
config file with a checkpoint (an empty checkpoint = random initialisation, to try the page).
Everything the page computes lives in :mod:`instaformer.interactive`; this file is the layout.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from instaformer import model_zoo
from instaformer.config import ConfigError, resolve_config_file
from instaformer.interactive import (
    View,
    instance_choices,
    parse_choice,
    ranking_rows,
    relation_rows,
)
from instaformer.predictor import Predictor, load_image
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


def model_choices(quickstart: Path = QUICKSTART) -> list[str]:
    """The model picker's entries: the quick-start model first when it has been trained, the
    released InstaFormer models by zoo name (downloaded on first use), a config + checkpoint."""
    choices = [e.name for e in model_zoo.ENTRIES if e.family == "instaformer"] + [CUSTOM_LABEL]
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
    """

    def __init__(
        self,
        device: str,
        factory: Callable[[str, str, list[str]], Predictor] = build_predictor,
        size: int = 2,
    ) -> None:
        self.device = device
        self.factory = factory
        self.size = size
        self._cache: dict[tuple, Predictor] = {}

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
            ValueError: no config, or an odd number of override words.
            ConfigError: a bad config file or override.
        """
        if choice == QUICKSTART_LABEL:
            config = QUICKSTART_CONFIG
            weights = str(QUICKSTART / "train" / "model_final.pth")
        elif choice != CUSTOM_LABEL:
            entry = model_zoo.get_entry(choice)
            config, weights = entry.config, entry.weights
        if not config.strip():
            raise ValueError("choose a config file (a path or a name under configs/)")
        words = overrides.split()
        if len(words) % 2:
            raise ValueError(f"config overrides must be KEY VALUE pairs; got {overrides!r}")
        opts = ["MODEL.DEVICE", self.device]
        opts += ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", str(float(threshold)), *words]
        key = (config.strip(), weights.strip(), tuple(opts))
        if key not in self._cache:
            if progress is not None:
                progress(0.1, desc="building the model, downloading its weights on first use")
            self._cache[key] = self.factory(key[0], key[1], opts)
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
    """The page. Handlers call :class:`~instaformer.interactive.View`; errors go to the status
    line, never to a dead page."""
    examples = _example_images()
    choices = model_choices()

    with gr.Blocks(title="InstaFormer: occlusion and depth orders", analytics_enabled=False) as app:
        state = gr.State(None)
        gr.Markdown(
            "# InstaFormer: occlusion and depth orders\n"
            "Upload a photo, run the model, then click an instance in the panoptic picture."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="image", type="numpy", elem_id="input-image")
                default = choices[0] if choices[0] == QUICKSTART_LABEL else DEFAULT_ZOO_MODEL
                model = gr.Dropdown(choices, value=default, label="model", elem_id="model")
                config = gr.Textbox(
                    label="config file (path or name under configs/)",
                    value=QUICKSTART_CONFIG,
                    elem_id="config",
                )
                weights = gr.Textbox(
                    label="checkpoint (empty = random initialisation)", elem_id="weights"
                )
                gr.Markdown("The config file and checkpoint are used with *" + CUSTOM_LABEL + "*.")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.8, step=0.05, label="min. segment score", elem_id="score"
                )
                overrides = gr.Textbox(
                    label="config overrides (KEY VALUE ...)", elem_id="overrides"
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
        download = gr.File(label="result JSON (as demo/demo.py writes it)", elem_id="json")

        def on_run(img, choice, cfg, ckpt, thr, opts, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            empty = (None,) * 8
            if img is None:
                return (None, *empty, "Upload an image first.")
            try:
                array = load_image(img)  # the reader of every entry point
                predictor = cache.get(choice, cfg, ckpt, thr, opts, progress)
                progress(0.5, desc="predicting")
                view = View.predict(predictor, array, source="upload")
            except (ConfigError, DownloadError, KeyError, ValueError, OSError, RuntimeError) as err:
                return (None, *empty, f"**Error:** {err}")
            k = len(view.result.segments)
            path = Path(tempfile.mkdtemp(prefix="instaformer-app-")) / "result.json"
            path.write_text(view.to_json())
            steps = k if view.result.depth_ranking is not None else 0
            return (
                view,
                view.panoptic(),
                gr.update(choices=instance_choices(view.result), value=None),
                gr.update(minimum=0, maximum=max(1, steps), value=steps),
                view.depth_layers(steps),
                view.occlusion_graph(),
                gr.update(value=ranking_rows(view.result)),
                str(path),
                f"{k} instance(s), tasks: {', '.join(view.tasks) or 'none'}. Click one.",
            )

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
            on_run,
            [image, model, config, weights, threshold, overrides],
            [state, panoptic, instance, layer, layers_view, graph, ranking, download, status],
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


def serve(cache: PredictorCache, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Build the page and serve it on ``http://host:port``; ``block=False`` returns at once (the
    server runs in a thread until ``app.close()``).

    Gradio gives up when its own first request to the page takes over 3 s (it then asks for a
    public share link); on a busy machine that happens while the server is fine, so the launch
    is tried up to ``LAUNCH_TRIES`` times before the error is raised.
    """
    app = build_app(cache)
    theme = gr.themes.Default(font=["sans-serif"], font_mono=["monospace"])  # no web fonts
    for attempt in range(1, LAUNCH_TRIES + 1):
        try:
            app.launch(
                server_name=host,
                server_port=port,
                theme=theme,
                prevent_thread_lock=not block,
                quiet=True,
            )
            break
        except ValueError as err:
            app.close()
            if "localhost is not accessible" not in str(err) or attempt == LAUNCH_TRIES:
                raise
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda)")
    args = parser.parse_args(argv)
    serve(PredictorCache(args.device), args.host, args.port)


if __name__ == "__main__":
    main()
