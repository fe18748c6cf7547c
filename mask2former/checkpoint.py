"""Loading weights into a model: detectron2 ``.pkl``, ``.pth`` checkpoints and plain state dicts.

Built on fvcore's ``Checkpointer`` (saving, resuming, other checkpointables unchanged). Paths
may be local files, ``https://`` URLs or ``detectron2://<name>`` model-zoo names (a package with
names of its own, such as InstaFormer's ``zoo://<name>``, resolves them first); remote files are
downloaded once by :mod:`mask2former.utils.download` into its cache (``$INSTAFORMER_CACHE``,
default ``~/.cache/instaformer``).

* ``.pkl`` (detectron2 model zoo, ``{"model": {name: numpy array}, "__author__": ...}``) is read
  with a restricted unpickler that only rebuilds numpy arrays/dtypes and plain containers; any
  other global in the file is refused with :class:`UnsafeCheckpointError` naming it.
* anything else is read with ``torch.load(weights_only=True)``: ``{"model": state_dict, ...}``
  (detectron2 / InstaFormer ``.pth``) or a plain ``{name: tensor}`` state dict.

Missing keys, unexpected keys and shape mismatches are logged and returned
(:meth:`M2FCheckpointer.load_weights`); ``strict=True`` turns any of them into an error.

Refused with :class:`CheckpointError` naming the file: a missing, empty, truncated or
unreadable file, said to be what its first bytes show (an HTML page such as a captive portal, a
text file, a cut zip or pickle, neither zip nor pickle); a ``.pth`` that ``weights_only`` loading
refuses for the Python objects it holds (code, which a weights file never needs); a
floating-point weight that is NaN or infinite (named); a file that fills less than ``min_share``
of the model (see :meth:`M2FCheckpointer.load_weights`). A file of the download cache that cannot
be read is moved aside (:func:`mask2former.utils.download.set_aside`) and the message says so:
the next run downloads it again.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from iopath.common.file_io import PathHandler, PathManager
from torch import nn

from mask2former.utils import download

__all__ = [
    "CheckpointError",
    "DEFAULT_MIN_SHARE",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "NonFiniteCheckpointError",
    "load_pickle_restricted",
    "load_torch_file",
    "M2FCheckpointer",
    "path_manager",
    "unloaded_modules",
]

logger = logging.getLogger(__name__)


DEFAULT_MIN_SHARE = 0.2
"""Least share of the model's weight values a checkpoint must fill (``MODEL.WEIGHTS_MIN_SHARE``).

Counted in values (elements), not keys, over the model's ``state_dict``. The legitimate partial
loads stay well above it (measured on the released configs): ImageNet ResNet-50 weights fill 53%
of Mask2Former R50 and 35% of pairwise InstaFormer R50; ImageNet Swin-T weights fill 33% of
InstaFormer Swin-T; a Mask2Former checkpoint fills 57-65% of an InstaFormer model (the order
head is new). A file whose keys match nothing fills 0%."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A pickle references a global outside the numpy / container allow-list."""


class CheckpointMismatchError(CheckpointError):
    """Strict loading found missing / unexpected keys or shape mismatches, or the checkpoint
    fills too little of the model."""


class NonFiniteCheckpointError(CheckpointError):
    """A floating-point weight of the checkpoint holds NaN or infinite values."""


class _RemoteHandler(PathHandler):
    """Remote weights -> the local copy made by :func:`mask2former.utils.download.fetch`."""

    def _get_supported_prefixes(self) -> list[str]:
        return ["https://", "http://", download.DETECTRON2_SCHEME]

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


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if not (_DOTTED_NAME.fullmatch(module) and _DOTTED_NAME.fullmatch(name)):
            # text read as a pickle's GLOBAL opcode ('c'): no pickle names such a global
            raise pickle.UnpicklingError(f"no Python global is called {module!r}.{name!r}")
        allowed = (module, name) in _ALLOWED_GLOBALS or (
            module in _ALLOWED_DTYPE_MODULES and name.endswith("DType")
        )
        if not allowed:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}'; a weights pickle may "
                "only contain numpy arrays, numbers, strings, lists, tuples and dicts"
            )
        return super().find_class(module, name)


def _check_local_file(path: str) -> None:
    if "://" in path:
        return
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(
            _set_aside_if_cached(path, f"checkpoint file {path} is empty (0 bytes)")
        )


_HEAD_BYTES = 4096  # how much of a file that does not load is read to tell what it is
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format (since PyTorch 1.6) is a zip archive
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(_HEAD_BYTES)


def _starts_as_pickle(head: bytes) -> bool:
    """The PROTO opcode of protocol 2 or later: how torch.save (before 1.6) and pickle.dump
    begin."""
    return len(head) >= 2 and head[:1] == pickle.PROTO and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def _is_weights_container(path: str) -> bool:
    """An intact zip archive, or a file that starts as a pickle: what a checkpoint is."""
    head = _head(path)
    return (head.startswith(_ZIP_MAGIC) and zipfile.is_zipfile(path)) or _starts_as_pickle(head)


def _as_text(head: bytes) -> str | None:
    """``head`` decoded when it is UTF-8 text (no NUL byte, 95% printable), else ``None``."""
    if b"\0" in head:
        return None
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        printable = sum(c.isprintable() or c in "\t\r\n\ufeff" for c in text)
        return text if printable >= 0.95 * len(text) else None
    return None


def _reason(err: BaseException) -> str:
    """`` (ErrorType: its message's telling line)`` for a message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):  # torch's preamble
        lines = [line for line in lines if not line.startswith(("Weights only", "Please file"))]
    return f" ({type(err).__name__}: {lines[0]})" if lines else f" ({type(err).__name__})"


def _what_it_is(path: str, err: BaseException) -> str:
    """What a file that failed to load as weights is, from its first bytes."""
    head = _head(path)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (
                "it is a truncated or damaged zip (torch.save's format): its end (the zip "
                "directory) is missing; download or copy it again"
            )
        return f"it is a zip archive but not a PyTorch checkpoint{_reason(err)}"
    if _starts_as_pickle(head):
        return f"it is a truncated or damaged pickle of protocol {head[1]}{_reason(err)}"
    text = _as_text(head)
    if text is None:
        return (
            "it is neither a PyTorch (zip) file nor a pickle (it begins with the bytes "
            f"{head[:8].hex(' ')}): random or damaged data, not weights"
        )
    start = text.lstrip("\ufeff \t\r\n")
    if start.lower().startswith(("<!doctype html", "<html")) or "<html" in start[:1024].lower():
        title = _HTML_TITLE.search(head)
        titled = ""
        if title:
            words = title.group(1).decode("utf-8", "replace").split()
            titled = f" titled {' '.join(words)[:80]!r}"
        return (
            f"it is an HTML page{titled}, not weights: a captive portal, login or error page "
            "saved in place of the file; download it from a network that reaches the host"
        )
    first = start.splitlines()[0][:60] if start else ""
    return f"it is a text file, not weights (it begins {first!r})"


def _set_aside_if_cached(path: str, message: str) -> str:
    """``message``, plus where a file of the download cache went when it is moved aside."""
    if not download.in_cache(path):
        return message
    moved = download.set_aside(path)
    where = f"moved aside to {moved}" if moved else "another process moved it aside"
    return (
        f"{message}\nThis is a download cached at {path}; {where}: the next run downloads it again."
    )


def _unreadable(path: str, err: BaseException) -> CheckpointError:
    size = os.path.getsize(path)
    message = f"cannot read checkpoint file {path} ({size} bytes): {_what_it_is(path, err)}"
    return CheckpointError(_set_aside_if_cached(path, message))


def load_pickle_restricted(path: str) -> Any:
    """Unpickle ``path`` (local, URL or ``detectron2://``) admitting only numpy data.

    Raises:
        UnsafeCheckpointError: the pickle references another global (named).
        CheckpointError: the file is missing, empty, truncated or not a pickle.
    """
    local = path_manager.get_local_path(path)  # a remote file: downloaded once, cached
    _check_local_file(local)
    with open(local, "rb") as f:
        try:
            return _RestrictedUnpickler(f, local).load()
        except UnsafeCheckpointError as err:
            raise UnsafeCheckpointError(_set_aside_if_cached(local, str(err))) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,  # and IndexError: unpickling bytes that are not a pickle
            IndexError,
        ) as err:
            raise _unreadable(local, err) from err


def load_torch_file(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors naming the file.

    Raises:
        UnsafeCheckpointError: the file holds Python objects beyond tensors and containers,
            which a weights file never needs and which could run code when loaded.
        CheckpointError: the file is missing, empty, truncated or not a PyTorch file.
    """
    _check_local_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        holds_objects = "GLOBAL" in message or "allowlisted" in message
        if not (holds_objects and _is_weights_container(path)):
            raise _unreadable(path, err) from err
        raise UnsafeCheckpointError(
            _set_aside_if_cached(
                path,
                f"refusing unsafe checkpoint file {path}: it contains Python objects (code) "
                "besides tensors, numbers and containers, which a weights file never needs; "
                "loading it could run that code. Use a checkpoint that holds only weights (e.g. "
                "re-save model.state_dict() from a source you trust).",
            )
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as err:
        # KeyError, IndexError: torch's weights-only unpickler reading bytes that are no pickle
        raise _unreadable(path, err) from err


class M2FCheckpointer(Checkpointer):
    """fvcore ``Checkpointer`` that reads detectron2 pickles safely and remote weights by name."""

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool = True, **checkpointables
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = path_manager
        # fvcore's IncompatibleKeys of the last model load; None before any.
        self.last_incompatible: Any | None = None
        self._loading = ""

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            data = load_pickle_restricted(filename)
            if not isinstance(data, dict):
                raise CheckpointError(
                    f"{filename}: expected a dict in the pickle, got {type(data)}"
                )
            if "model" in data:
                model = data["model"]
                extra = {k: v for k, v in data.items() if k != "model"}
            else:
                model, extra = data, {}
            if not isinstance(model, dict):
                raise CheckpointError(f"{filename}: 'model' entry is a {type(model)}, not a dict")
            extra.pop("matching_heuristics", None)
            return {"model": self._add_backbone_prefix(dict(model)), **extra}
        loaded = load_torch_file(filename)
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{filename}: expected a dict checkpoint, got {type(loaded)}")
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
        _check_finite(checkpoint["model"], set(self.model.state_dict()), self._loading)
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        return incompatible

    def load_weights(
        self, path: str, *, strict: bool = False, min_share: float = DEFAULT_MIN_SHARE
    ) -> dict[str, list]:
        """Load model weights only (no optimizer etc.) and report what did not match.

        Args:
            strict: refuse any missing / unexpected key or shape mismatch.
            min_share: refuse a checkpoint that fills less than this share (0-1) of the model's
                weight values (``state_dict`` elements); 0 accepts any. See
                :data:`DEFAULT_MIN_SHARE` for why the default still loads backbone-only and
                Mask2Former checkpoints.
        Returns:
            ``{"missing_keys": [...], "unexpected_keys": [...], "incorrect_shapes":
            [(key, checkpoint_shape, model_shape), ...]}``.

        Raises:
            CheckpointMismatchError: with ``strict`` and any mismatch, listing all of them; or
                when the checkpoint fills less than ``min_share`` of the model.
            NonFiniteCheckpointError: a weight the model would load holds NaN or inf (named).
            UnsafeCheckpointError, CheckpointError: the file cannot be read safely (named).
        """
        self._loading = path
        if "://" not in path:
            _check_local_file(path)
        self.last_incompatible = None
        self.load(path, checkpointables=[])
        inc = self.last_incompatible
        if inc is None:  # fvcore skips the model only for an empty path
            raise CheckpointError(f"{path!r}: no model weights were loaded")
        report = {
            "missing_keys": list(inc.missing_keys),
            "unexpected_keys": list(inc.unexpected_keys),
            "incorrect_shapes": [(k, tuple(a), tuple(b)) for k, a, b in inc.incorrect_shapes],
        }
        if strict and any(report.values()):
            raise CheckpointMismatchError(format_report(path, report))
        self._check_share(path, report, min_share)
        return report

    def _check_share(self, path: str, report: dict[str, list], min_share: float) -> None:
        state = self.model.state_dict()
        not_loaded = set(report["missing_keys"]) | {k for k, _, _ in report["incorrect_shapes"]}
        total = sum(v.numel() for v in state.values())
        filled = sum(v.numel() for k, v in state.items() if k not in not_loaded)
        share = filled / total if total else 1.0
        logger.info("%s filled %.1f%% of the model's weight values", path, 100 * share)
        if share < min_share:
            raise CheckpointMismatchError(
                f"checkpoint {path} fills only {100 * share:.1f}% of the model's weight values "
                f"({filled} of {total}; {len(report['unexpected_keys'])} of its keys match "
                f"nothing in the model); at least {100 * min_share:.0f}% is expected "
                "(MODEL.WEIGHTS_MIN_SHARE). Is it a checkpoint of this model and config? "
                "Set MODEL.WEIGHTS_MIN_SHARE 0 to load it anyway."
            )


def _check_finite(state: dict[str, Any], model_keys: set[str], path: str) -> None:
    """Refuse NaN / inf in floating-point entries of ``state`` that the model would load."""
    bad = []
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name not in model_keys:
            continue
        tensor = torch.as_tensor(value)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise NonFiniteCheckpointError(
            f"checkpoint {path} holds NaN or infinite values in {len(bad)} weight(s): {shown}. "
            "A model loaded from it would give empty or meaningless results; use a checkpoint "
            "saved before training diverged."
        )


def unloaded_modules(keys: Sequence[str], unloaded: Iterable[str]) -> list[tuple[str, int]]:
    """``unloaded`` keys of a state dict with ``keys``, summarised by module: each key is given
    to the largest module (dotted prefix) all of whose keys are unloaded.

    Returns:
        ``[(module, number of its keys), ...]`` in state-dict order; the module is ``""`` when
        no key was loaded at all, the key itself when its module holds loaded keys too.
    """
    missing = set(unloaded) & set(keys)
    if missing and len(missing) == len(set(keys)):
        return [("", len(missing))]
    total: Counter = Counter()
    absent: Counter = Counter()
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            total[prefix] += 1
            absent[prefix] += key in missing
    groups: Counter = Counter()
    for key in keys:
        if key in missing:
            parts = key.split(".")
            prefixes = (".".join(parts[:d]) for d in range(1, len(parts) + 1))
            groups[next(p for p in prefixes if absent[p] == total[p])] += 1
    return list(groups.items())


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
