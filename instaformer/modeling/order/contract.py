"""The order-head contract: what a head receives (:class:`OrderInputs`) and what it returns.

Shape shorthand: n selected instances of one image (the rows and columns of every order
matrix), C mask-embedding / mask-feature width, h x w mask-feature map, H x W input image,
K classes of a task (``TASK_CLASSES``), L head layers.

After ``run_network`` the meta-architecture selects n queries per image (matched to the
annotated instances, or the thing segments of the panoptic prediction) and hands their
:class:`OrderInputs` to the head. A head is an :class:`OrderHead`: it names its ``tasks`` and
``num_layers``, declares whether the order losses add its training class prior
(``uses_class_prior``), and maps one bundle to ``{task: [Tensor[n, n, K] per layer]}``
log-probabilities with :meth:`OrderHead.log_probs`. Subclasses implement :meth:`OrderHead.scores`
(logits: log-probabilities up to a per-row constant); the default ``log_probs`` is their
``log_softmax``, and a head whose scores are already normalised returns them unchanged.

Consumers: the order losses take the log-probabilities as they are (negative log-likelihood,
or Balanced Softmax ``CE(log p + log prior)``, equal to Balanced Softmax on the logits since
``log_softmax`` only shifts each row); inference reads labels as their argmax and probabilities
as their ``exp``. Row i, column j is always the relation of instance i to instance j.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["OrderHead", "OrderInputs"]


@dataclass(frozen=True, eq=False)
class OrderInputs:
    """What an order head may read about the n selected instances of one image.

    Attributes:
        mask_embed: Tensor[n, C] final-layer mask embeddings of the selected queries.
        masks: bool Tensor[n, h, w] their binarised mask logits (logit > 0), no gradient.
        mask_features: Tensor[C, h, w] the pixel decoder's mask features of the image.
        image: uint8 Tensor[3, H, W] the unpadded input image (as the model received it), or
            None when the caller has none (heads that need it raise).
        image_format: ``"RGB"`` or ``"BGR"``, the channel order of ``image``.
        valid_size: ``(h', w')`` part of the h x w map that covers the unpadded image (the
            rest is padding).
    """

    mask_embed: Tensor
    masks: Tensor
    mask_features: Tensor
    image: Tensor | None
    image_format: str
    valid_size: tuple[int, int]

    @property
    def num_instances(self) -> int:
        """n, the rows of every order matrix."""
        return int(self.mask_embed.shape[0])


class OrderHead(nn.Module):
    """Base class of the order heads registered in ``ORDER_HEAD_REGISTRY`` (module docstring).

    Subclasses set ``tasks`` (names among ``TASK_CLASSES``, in that order) and
    ``num_layers`` (predictions per task), may set ``uses_class_prior = False`` (their
    log-probabilities are trained without the ``INPUT.*_SAMPLES_PER_CLASS`` prior), and
    implement :meth:`scores`.
    """

    tasks: tuple[str, ...]
    num_layers: int
    uses_class_prior: bool = True

    def scores(self, inputs: OrderInputs) -> dict[str, list[Tensor]]:
        """``{task: [Tensor[n, n, K] per layer]}`` logits of one image, last layer last.

        Their row-wise softmax gives the class probabilities; ``[i, j]`` = instance i vs
        instance j. Diagonal cells carry no meaning.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement scores()")

    def log_probs(self, inputs: OrderInputs) -> dict[str, list[Tensor]]:
        """``{task: [Tensor[n, n, K] per layer]}`` float32 log-probabilities (``log_softmax`` of
        :meth:`scores` in float32, also under autocast; a head whose scores are normalised
        overrides this to skip it)."""
        return {
            t: [s.float().log_softmax(-1) for s in layers]
            for t, layers in self.scores(inputs).items()
        }
