"""Containers passed between the data pipeline, the model and the evaluators.

Shape shorthand: N instances, H, W image size.

``Instances`` follows detectron2's interface (``image_size``, field access by attribute,
``len``, ``to``, indexing), so code written against detectron2 reads the same here.
"""

from __future__ import annotations

from typing import Any

import torch


class Instances:
    """A set of N instances of one image, each field a sequence of length N.

    Typical fields: ``gt_classes`` Tensor[N] int64, ``gt_masks`` Tensor[N, H, W] bool,
    ``gt_boxes`` Tensor[N, 4] float (x0, y0, x1, y1); on predictions ``pred_classes``,
    ``pred_masks``, ``scores``, ``pred_boxes``, ``query_index``.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the instances belong to."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; "_fields" itself is missing during unpickling.
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            raise AttributeError(f"Instances has no field '{name}'; fields: {list(self._fields)}")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field; its length must equal that of the existing fields."""
        if self._fields:
            n = len(self)
            if len(value) != n:
                raise ValueError(f"field '{name}' has length {len(value)}, expected {n}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Move every tensor field (``Tensor.to`` arguments)."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value.to(*args, **kwargs) if hasattr(value, "to") else value)
        return out

    def __getitem__(self, item: int | slice | torch.Tensor) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range")
            item = slice(item, item + 1 if item != -1 else None)
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, value[item])
        return out

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        return 0

    def __repr__(self) -> str:
        fields = ", ".join(self._fields)
        size = self._image_size
        return f"Instances(num_instances={len(self)}, image_size={size}, fields=[{fields}])"
