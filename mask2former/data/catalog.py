"""Dataset and metadata catalogs: names -> loader functions, names -> metadata.

A dataset is registered once under a name with a function that returns its list of dataset
dicts; the list is only built when :meth:`DatasetCatalog.get` is called, so registering costs
nothing and file locations may be resolved lazily (e.g. from ``DETECTRON2_DATASETS``). A
:class:`~mask2former.data.cache.CachedLoader` instead returns its records from a record file
built once per node (a sequence of dicts decoded on access).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mask2former.data.cache import CachedLoader, RecordSequence

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "Deferred"]


class Deferred:
    """A metadata value computed when it is read (e.g. a path under a root read at call time)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def __call__(self) -> Any:
        return self.fn()


class _DatasetCatalog:
    """Global name -> ``fn() -> list[dict]`` (or :class:`CachedLoader`) mapping."""

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], Sequence[dict]]] = {}

    def register(self, name: str, fn: Callable[[], Sequence[dict]]) -> None:
        """Register ``fn`` under ``name``; a name cannot be registered twice."""
        if not callable(fn):
            raise TypeError(f"dataset '{name}': the loader must be callable, got {type(fn)}")
        if name in self._loaders:
            raise KeyError(f"dataset '{name}' is already registered")
        self._loaders[name] = fn

    def get(self, name: str, *, cache: bool = True) -> Sequence[dict]:
        """Call the loader of ``name`` and return its dataset dicts: a ``list``, or with
        ``cache`` the records of a :class:`CachedLoader`'s record file (False: parsed into a
        list)."""
        if name not in self._loaders:
            known = ", ".join(sorted(self._loaders)) or "(none)"
            raise KeyError(
                f"dataset '{name}' is not registered. Registered datasets: {known}. "
                "Import instaformer.data to register the InstaOrder datasets."
            )
        loader = self._loaders[name]
        dicts = loader.load(cache=cache) if isinstance(loader, CachedLoader) else loader()
        if not isinstance(dicts, list | RecordSequence):
            raise TypeError(f"dataset '{name}': the loader returned {type(dicts)}, not a list")
        return dicts

    def list(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._loaders)

    def remove(self, name: str) -> None:
        """Forget ``name`` (its metadata stays in :data:`MetadataCatalog`)."""
        self._loaders.pop(name)

    def __contains__(self, name: str) -> bool:
        return name in self._loaders


class Metadata:
    """Attributes of one dataset (class names, colours, id maps, file roots, evaluator type).

    Read by attribute (``meta.thing_classes``) or with :meth:`get`; written with :meth:`set`,
    which refuses to change an existing value to a different one.
    """

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_fields", {})

    def __getattr__(self, key: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if key not in fields:
            raise AttributeError(
                f"metadata of dataset '{self.name}' has no attribute '{key}'; "
                f"available: {sorted(fields)}"
            )
        value = fields[key]
        return value() if isinstance(value, Deferred) else value

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(**{key: value})

    def set(self, **kwargs: Any) -> Metadata:
        """Set attributes; returns ``self`` so calls can be chained."""
        for key, value in kwargs.items():
            if key == "name":
                raise AttributeError("the metadata 'name' is fixed at creation")
            if key in self._fields and not _same(self._fields[key], value):
                raise ValueError(
                    f"metadata '{key}' of dataset '{self.name}' is already set to "
                    f"{self._fields[key]!r}; refusing to change it to {value!r}"
                )
            self._fields[key] = value
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it is not set."""
        return getattr(self, key) if key in self._fields else default

    def as_dict(self) -> dict[str, Any]:
        """Every attribute (deferred values evaluated), plus ``name``."""
        out = {key: getattr(self, key) for key in self._fields}
        out["name"] = self.name
        return out

    def __repr__(self) -> str:
        return f"Metadata(name={self.name!r}, fields={sorted(self._fields)})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Deferred) or isinstance(b, Deferred):
        return a is b
    return a == b


class _MetadataCatalog:
    """Global name -> :class:`Metadata` mapping; ``get`` creates an empty entry on first use."""

    def __init__(self) -> None:
        self._metadata: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._metadata:
            self._metadata[name] = Metadata(name)
        return self._metadata[name]

    def list(self) -> list[str]:
        return list(self._metadata)

    def remove(self, name: str) -> None:
        self._metadata.pop(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._metadata)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
