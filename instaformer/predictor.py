"""Blind inference on user images: ``Predictor`` -> ``OrderResult`` (docs/reference.md [IF 3.2]).

Shape shorthand: H x W the original image, h x w the image fed to the model (after the test-time
resize), k the number of *thing* segments of the panoptic output (the rows of the order
matrices). The result types and their conventions are in :mod:`instaformer.structures`.

Images are given as a file path, a PIL image, or a NumPy ``uint8`` array ``[H, W, 3]`` in **RGB**
order (``[H, W]`` grey, ``[H, W, 4]`` RGBA and ``uint16`` arrays are accepted); they are read by
the dataset loader's rules (:mod:`instaformer.data.io`: 16-bit scaled to 8, floating point
refused, EXIF orientation applied, size limits) and converted to the model's ``INPUT.FORMAT``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from instaformer.config import CfgNode, setup_cfg
from instaformer.data.augment import resize_image, shortest_edge_size
from instaformer.data.io import image_to_rgb, read_image
from instaformer.structures import OrderResult, result_from_output
from mask2former.modeling.build import available_device
from mask2former.modeling.meta_arch import MaskFormer

__all__ = ["BACKENDS", "ImageInput", "Predictor", "class_names_from_cfg", "load_image"]

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | np.ndarray | Image.Image
"""A file path, a PIL image, or an RGB ``uint8`` array ``[H, W, 3]`` (or grey ``[H, W]``, RGBA
``[H, W, 4]``, ``uint16``)."""

BACKENDS = ("pytorch", "onnxruntime")
"""Inference backends of :class:`Predictor`."""


def load_image(image: ImageInput) -> np.ndarray:
    """Any :data:`ImageInput` -> ``uint8[H, W, 3]`` RGB, by the rules of
    :mod:`instaformer.data.io` (the dataset loader's).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: (:class:`~instaformer.data.io.ImageError` and ``DataError``) a file that is
            not a readable image, an unsupported pixel type, dtype or shape, or an image over
            the size limits; the message names the image.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        return read_image(path)
    if isinstance(image, (Image.Image, np.ndarray)):
        return image_to_rgb(image, f"{type(image).__name__} input")
    raise TypeError(
        f"unsupported image input {type(image).__name__}: expected a path, a PIL image or a "
        "uint8 RGB array [H, W, 3]"
    )


def class_names_from_cfg(cfg: CfgNode) -> list[str]:
    """Names of the contiguous classes ``0 .. NUM_CLASSES - 1``.

    From the metadata of ``DATASETS.TEST[0]`` when registered with ``stuff_classes``; else the
    COCO panoptic names when ``NUM_CLASSES`` is 133; else ``"class N"``.
    """
    from mask2former.data.catalog import MetadataCatalog
    from mask2former.data.coco_categories import COCO_CATEGORIES

    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if cfg.DATASETS.TEST and cfg.DATASETS.TEST[0] in MetadataCatalog.list():
        names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("stuff_classes")
        if names is not None and len(names) == num_classes:
            return list(names)
    if num_classes == len(COCO_CATEGORIES):
        return [c["name"] for c in COCO_CATEGORIES]
    return [f"class {i}" for i in range(num_classes)]


# Segmentation results a Predictor call asks the model for: an OrderResult holds the panoptic
# segments and the orders between them, nothing of Mask2Former's semantic or instance outputs.
PREDICTOR_RESULTS = ("panoptic_seg",)


class Predictor:
    """Image(s) in, :class:`OrderResult` out, with a model in eval mode.

    Images are preprocessed as the test-time mapper does: with ``INPUT.AUGMENT`` the short side
    is resized to ``INPUT.MIN_SIZE_TEST`` (long side at most ``INPUT.MAX_SIZE_TEST``,
    :func:`~instaformer.data.augment.shortest_edge_size`), otherwise the image keeps its size
    (the released models were trained and evaluated that way; the reference demo resized
    anyway). Without ``INPUT.AUGMENT``, an image *larger* than that test size is still
    downscaled to it unless ``fit_test_size`` is False (logged once): at native size a
    12-megapixel photo can need more than 10 GB. Results are given at the original size.

    Args:
        cfg: full config (``instaformer.config.get_cfg()`` + file + overrides), used as it is:
            each call asks the model for the panoptic result only (``PREDICTOR_RESULTS``) and
            for the orders of its thing segments (the inputs carry no ground truth), whatever
            ``TEST.*_ON`` and ``TEST.*_EVALUATION`` say. ``MODEL.DEVICE`` "cuda" runs on the CPU
            when CUDA is missing.
        model: an already built model following the same output contract (tests, export; the
            model object ``--eval-only`` evaluates serves as it is); default: ``build_model(cfg)``
            with ``MODEL.WEIGHTS`` loaded. Its ``output_tasks`` are the reported order tasks
            (none when it has no such attribute).
        fit_test_size: downscale images larger than the test size (see above).
        backend: ``"pytorch"``, or ``"onnxruntime"``: the network and the order head run as
            exported ONNX graphs in ONNX Runtime (CPU), the post-processing stays shared
            (:class:`instaformer.deploy.runtime.OnnxRuntimeModel`; needs the ``[export]`` extra).
    """

    def __init__(
        self,
        cfg: CfgNode,
        *,
        model: nn.Module | None = None,
        fit_test_size: bool = True,
        backend: str = "pytorch",
    ) -> None:
        from instaformer.data.custom import register_custom_datasets

        register_custom_datasets(cfg)  # their categories name the classes (DATASETS.CUSTOM)
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.fit_test_size = fit_test_size
        self._logged_fit = False
        # The model's parameters that MODEL.WEIGHTS left random (by name): all of them when it is
        # empty; None for a given model (unknown).
        self.random_weights: list[str] | None = None
        if model is None:
            # on MODEL.DEVICE, or the CPU without CUDA
            model, self.random_weights = _build_and_load(self.cfg)
            self.device = next(model.parameters()).device
        else:
            self.device = available_device(self.cfg.MODEL.DEVICE)
        self.model = model.to(self.device).eval()
        logger.info("Predictor running on %s", self.device)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend
        # (input dicts, results=...) -> output dicts: the model, or its ONNX Runtime stand-in.
        self._forward: Callable[..., list[dict[str, Any]]] = self.model
        if backend == "onnxruntime":
            from instaformer.deploy.runtime import OnnxRuntimeModel

            if not isinstance(self.model, MaskFormer):
                raise TypeError(
                    "backend 'onnxruntime' exports a MaskFormer or InstaFormer model, got a "
                    f"{type(self.model).__name__}"
                )
            self._forward = OnnxRuntimeModel(self.model, config_text=self.cfg.dump())
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR'; got {self.input_format!r}")
        self.class_names = class_names_from_cfg(self.cfg)
        self.tasks = tuple(getattr(self.model, "output_tasks", ()))

    @classmethod
    def from_config_file(
        cls,
        config_file: str | os.PathLike,
        weights: str | None = None,
        opts: Sequence[str] | None = None,
    ) -> Predictor:
        """Build from a yaml file; ``weights`` overrides ``MODEL.WEIGHTS``, ``opts`` are
        ``KEY VALUE`` overrides applied last."""
        overrides = list(opts or [])
        if weights is not None:
            overrides += ["MODEL.WEIGHTS", str(weights)]
        return cls(setup_cfg(str(config_file), overrides))

    @classmethod
    def from_pretrained(
        cls, name: str, *, device: str | None = None, opts: Sequence[str] | None = None
    ) -> Predictor:
        """A released model by its zoo name (``instaformer-zoo list``): config and weights.

        The weights are downloaded once into the cache (:mod:`mask2former.utils.download`).
        ``device`` sets ``MODEL.DEVICE`` (default: the config's, CPU without CUDA); ``opts`` are
        ``KEY VALUE`` overrides applied last.

        Raises:
            KeyError: unknown name.
            ValueError: an InstaOrderNet entry (it classifies pairs of given masks).
            DownloadError: the weights could not be fetched (the message says where to put them).
        """
        from instaformer.model_zoo import model_args

        config_file, weights = model_args(name, for_images=True)
        overrides = weights + (["MODEL.DEVICE", device] if device else []) + list(opts or [])
        return cls(setup_cfg(config_file, overrides))

    def preprocess(self, image: np.ndarray) -> dict[str, Any]:
        """RGB ``uint8[H, W, 3]`` -> the model's input dict (resized, in ``INPUT.FORMAT``)."""
        height, width = image.shape[:2]
        size = shortest_edge_size(
            height, width, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        )
        if not self.cfg.INPUT.AUGMENT:  # native size, unless larger than the test size
            if not self.fit_test_size or (size[0] >= height and size[1] >= width):
                size = (height, width)
            elif not self._logged_fit:
                self._logged_fit = True
                logger.info(
                    "Images larger than the test size (INPUT.MIN_SIZE_TEST %d, MAX_SIZE_TEST %d) "
                    "are downscaled to it (first: %dx%d -> %dx%d); results are given at the "
                    "original size",
                    self.cfg.INPUT.MIN_SIZE_TEST,
                    self.cfg.INPUT.MAX_SIZE_TEST,
                    width,
                    height,
                    size[1],
                    size[0],
                )
        image = resize_image(image, size)
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor.to(self.device), "height": height, "width": width}

    @overload
    def __call__(self, images: ImageInput, batch_size: int = 1) -> OrderResult: ...

    # list[Any]: a list is invariant, so list[ImageInput] would refuse a list[str] or list[Path].
    @overload
    def __call__(
        self, images: list[Any] | tuple[ImageInput, ...], batch_size: int = 1
    ) -> list[OrderResult]: ...

    @torch.inference_mode()
    def __call__(
        self, images: ImageInput | list[Any] | tuple[ImageInput, ...], batch_size: int = 1
    ) -> OrderResult | list[OrderResult]:
        """Predict one image (returns an :class:`OrderResult`) or a list or tuple of them
        (returns a list).

        ``batch_size`` images of a list go through the model together.
        """
        single = not isinstance(images, (list, tuple))
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        results: list[OrderResult] = []
        for start in range(0, len(items), batch_size):
            arrays = [load_image(x) for x in items[start : start + batch_size]]
            outputs = self._forward([self.preprocess(a) for a in arrays], results=PREDICTOR_RESULTS)
            results += [self.postprocess(o) for o in outputs]
        return results[0] if single else results

    def postprocess(self, output: dict[str, Any]) -> OrderResult:
        """One output dict of the model (blind-inference contract) -> :class:`OrderResult`."""
        return result_from_output(output, self.class_names, self.tasks)


def _build_and_load(cfg: CfgNode) -> tuple[nn.Module, list[str]]:
    """The model with ``MODEL.WEIGHTS`` loaded, and the names of the parameters left random."""
    from instaformer.modeling import build_model

    model = build_model(cfg)
    parameters = [name for name, _ in model.named_parameters()]
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: the model is randomly initialised")
        return model, parameters
    if "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise FileNotFoundError(f"MODEL.WEIGHTS file not found: {cfg.MODEL.WEIGHTS}")
    from instaformer.model_zoo import fetch
    from mask2former.checkpoint import M2FCheckpointer, format_report

    report = M2FCheckpointer(model, save_to_disk=False).load_weights(
        fetch(cfg.MODEL.WEIGHTS), min_share=cfg.MODEL.WEIGHTS_MIN_SHARE
    )
    if any(report.values()):
        logger.warning("%s", format_report(cfg.MODEL.WEIGHTS, report))
    not_loaded = set(report["missing_keys"]) | {key for key, _, _ in report["incorrect_shapes"]}
    return model, [name for name in parameters if name in not_loaded]
