"""Loading weights into a model: detectron2 ``.pkl``, ``.pth`` checkpoints and plain state dicts.

Built on fvcore's ``Checkpointer`` (saving, resuming, other checkpointables unchanged). Paths
may be local files, ``https://`` URLs, ``detectron2://<name>`` model-zoo names or ``zoo://<name>``
released models; remote files are downloaded once by :mod:`mask2former.utils.download` into its
cache (``$INSTAFORMER_CACHE``, default ``~/.cache/instaformer``).

* ``.pkl`` (detectron2 model zoo, ``{"model": {name: numpy array}, "__author__": ...}``) is read
  with a restricted unpickler that only rebuilds numpy arrays/dtypes and plain containers; any
  other global in the file is refused with :class:`UnsafeCheckpointError` naming it.
* anything else is read with ``torch.load(weights_only=True)``: ``{"model": state_dict, ...}``
  (detectron2 / InstaFormer ``.pth``) or a plain ``{name: tensor}`` state dict.

Missing keys, unexpected keys and shape mismatches are logged and returned
(:meth:`M2FCheckpointer.load_weights`); ``strict=True`` turns any of them into an error.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from iopath.common.file_io import PathHandler, PathManager
from torch import nn

from mask2former.utils import download

__all__ = [
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "load_pickle_restricted",
    "M2FCheckpointer",
    "path_manager",
]

logger = logging.getLogger(__name__)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A pickle references a global outside the numpy / container allow-list."""


class CheckpointMismatchError(ValueError):
    """Strict loading found missing / unexpected keys or shape mismatches."""


class _RemoteHandler(PathHandler):
    """Remote weights -> the local copy made by :func:`mask2former.utils.download.fetch`."""

    def _get_supported_prefixes(self) -> list[str]:
        return ["https://", "http://", "detectron2://", "zoo://"]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        return download.fetch(path)

    def _open(self, path: str, mode: str = "r", **kwargs: Any):
        if "r" not in mode or "+" in mode:
            raise ValueError(
                f"{path}: remote weights are read-only; cannot open with mode {mode!r}"
            )
        return open(self._get_local_path(path), mode)


path_manager = PathManager()
path_manager.register_handler(_RemoteHandler())

# (module, name) pairs a detectron2 / numpy pickle legitimately references.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes written by Python 2 pickles
}
_ALLOWED_DTYPE_MODULES = {"numpy", "numpy.dtypes"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED_GLOBALS or (
            module in _ALLOWED_DTYPE_MODULES and name.endswith("DType")
        )
        if not allowed:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}'; a weights pickle may "
                "only contain numpy arrays, numbers, strings, lists, tuples and dicts"
            )
        return super().find_class(module, name)


def load_pickle_restricted(path: str) -> Any:
    """Unpickle ``path`` (local, URL or ``detectron2://``) admitting only numpy data."""
    with path_manager.open(path, "rb") as f:
        return _RestrictedUnpickler(f, path).load()


class M2FCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` that reads detectron2 pickles safely and remote weights by name."""

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool = True, **checkpointables
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = path_manager
        self.last_incompatible = None

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            data = load_pickle_restricted(filename)
            if not isinstance(data, dict):
                raise ValueError(f"{filename}: expected a dict in the pickle, got {type(data)}")
            if "model" in data:
                model = data["model"]
                extra = {k: v for k, v in data.items() if k != "model"}
            else:
                model, extra = data, {}
            if not isinstance(model, dict):
                raise ValueError(f"{filename}: 'model' entry is a {type(model)}, not a dict")
            extra.pop("matching_heuristics", None)
            return {"model": self._add_backbone_prefix(dict(model)), **extra}
        loaded = torch.load(filename, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{filename}: expected a dict checkpoint, got {type(loaded)}")
        if "model" in loaded and isinstance(loaded["model"], dict):
            return dict(loaded)
        return {"model": loaded}

    def _add_backbone_prefix(self, state: dict[str, Any]) -> dict[str, Any]:
        """Backbone-only pickles (ImageNet Swin/ResNet) name keys without ``backbone.``."""
        model_keys = set(self.model.state_dict())
        if any(k in model_keys for k in state):
            return state
        prefixed = {f"backbone.{k}": v for k, v in state.items()}
        if any(k in model_keys for k in prefixed):
            logger.info("checkpoint holds backbone weights only; loading them under 'backbone.'")
            return prefixed
        return state

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        return incompatible

    def load_weights(self, path: str, *, strict: bool = False) -> dict[str, list]:
        """Load model weights only (no optimizer etc.) and report what did not match.

        Returns:
            ``{"missing_keys": [...], "unexpected_keys": [...], "incorrect_shapes":
            [(key, checkpoint_shape, model_shape), ...]}``.

        Raises:
            CheckpointMismatchError: with ``strict`` and any mismatch, listing all of them.
        """
        self.load(path, checkpointables=[])
        inc = self.last_incompatible
        report = {
            "missing_keys": list(inc.missing_keys),
            "unexpected_keys": list(inc.unexpected_keys),
            "incorrect_shapes": [(k, tuple(a), tuple(b)) for k, a, b in inc.incorrect_shapes],
        }
        if strict and any(report.values()):
            raise CheckpointMismatchError(format_report(path, report))
        return report


def format_report(path: str, report: dict[str, list]) -> str:
    """Human-readable summary of a :meth:`M2FCheckpointer.load_weights` report."""
    lines = [f"checkpoint {path} does not match the model:"]
    for key, ckpt_shape, model_shape in report["incorrect_shapes"]:
        lines.append(f"  shape mismatch {key}: {ckpt_shape} in checkpoint, {model_shape} in model")
    if report["missing_keys"]:
        lines.append(f"  missing in checkpoint ({len(report['missing_keys'])}):")
        lines += [f"    {k}" for k in report["missing_keys"]]
    if report["unexpected_keys"]:
        lines.append(f"  not in the model ({len(report['unexpected_keys'])}):")
        lines += [f"    {k}" for k in report["unexpected_keys"]]
    return "\n".join(lines)
