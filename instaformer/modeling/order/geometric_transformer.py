"""The holistic order head ``GeometricTransformer``, named as in the released checkpoints.

Shape shorthand: n selected instances of one image, C mask-embedding / mask-feature width
(``MASK_DIM``), D head width (``D_MODEL``), h x w mask-feature map, K classes of a task.

Output conventions: ``occlusion[i, j]`` logits over {0: i does not occlude j,
1: i occludes j}; ``depth[i, j]`` logits over {0: i is farther than j, 1: i is closer than j,
2: same depth}. Diagonal entries are computed but carry no meaning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from instaformer.modeling.order.contract import OrderHead, OrderInputs
from instaformer.modeling.order.feature_attention import (
    attention_pool_dense,
    attention_pool_sparse,
)
from instaformer.modeling.order.layers import MLP, TransformerStack, xavier_init_matrices
from instaformer.vocabulary import TASK_CLASSES

__all__ = ["GeometricTransformer"]


class GeometricTransformer(OrderHead):
    """Holistic order head: pooled instance features + mask embeddings -> pairwise order logits.

    Per image: (1) instance-axis attention over the mask-gated pixel features and a global
    max-pool (``attn_before_pool``); (2) projection of embeddings and pooled features to width D
    (identity when ``mask_dim == d_model``); (3) ``num_layers`` self-attention layers over the 2n
    tokens ``[E0; F0]``; (4) after every layer and for every task: task MLPs on the embedding half
    and the feature half (plus ``E0``/``F0`` when ``add_input_representations``), pair score
    ``S = e @ f.T`` (``f @ e.T`` when ``transpose_queries``) and a per-entry MLP ``1 -> D -> K``.

    ``chain_task_mlps`` (released behaviour, True): with two tasks the second task's MLPs read the
    first task's outputs ``e, f`` instead of the layer output; released ``od`` weights were trained
    so (docs/reference.md [IF 7.3]). False gives independent task branches. It changes nothing
    with a single task. Parameter names follow the released checkpoints ([IF 1.7]).
    """

    def __init__(
        self,
        *,
        tasks: Sequence[str],
        mask_dim: int = 256,
        d_model: int = 512,
        num_heads: int = 8,
        num_layers: int = 8,
        mlp_num_layers: int = 2,
        mlp_expansion: int = 4,
        attn_before_pool: bool = True,
        add_input_representations: bool = True,
        transpose_queries: bool = False,
        chain_task_mlps: bool = True,
        dense_feature_attention: bool = False,
    ) -> None:
        """
        Args:
            tasks: non-empty subset of ``TASK_CLASSES`` keys, in the released order.
            mask_dim: width C of mask embeddings and mask features.
            d_model: width D of the interaction transformer and task MLPs.
            num_heads: attention heads of both transformers.
            num_layers: interaction-transformer layers; one prediction per layer.
            mlp_num_layers, mlp_expansion: depth and hidden factor of every MLP.
            attn_before_pool: run the instance-axis attention before pooling.
            add_input_representations: add ``E0``/``F0`` to the task-MLP outputs.
            transpose_queries: score ``f @ e.T`` instead of ``e @ f.T``.
            chain_task_mlps: see the class docstring.
            dense_feature_attention: compute step (1) with the released O(n*h*w) formulation
                instead of the equivalent covered-pixel formulation (for tests and benchmarks).
        """
        super().__init__()
        unknown = [t for t in tasks if t not in TASK_CLASSES]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"tasks must be distinct names among {list(TASK_CLASSES)}, got {list(tasks)}"
            )
        order = list(TASK_CLASSES)
        if list(tasks) != sorted(tasks, key=order.index):
            raise ValueError(f"tasks must follow the order {order}, got {list(tasks)}")
        self.tasks = tuple(tasks)
        self.add_input_representations = add_input_representations
        self.transpose_queries = transpose_queries
        self.chain_task_mlps = chain_task_mlps
        self.dense_feature_attention = dense_feature_attention
        mlp = {"num_layers": mlp_num_layers}
        hidden = d_model * mlp_expansion

        self.features_transformer = (
            TransformerStack(
                dim=mask_dim,
                num_heads=num_heads,
                num_layers=1,
                mlp_expansion=mlp_expansion,
                mlp_num_layers=mlp_num_layers,
            )
            if attn_before_pool
            else None
        )
        project = mask_dim != d_model
        self.proj_feats_to_input_size = nn.Linear(mask_dim, d_model) if project else nn.Identity()
        self.proj_embed_to_input_size = nn.Linear(mask_dim, d_model) if project else nn.Identity()
        self.concat_transformer = TransformerStack(
            dim=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
            mlp_expansion=mlp_expansion,
            mlp_num_layers=mlp_num_layers,
        )
        # projs[t] = [embedding-half MLP, feature-half MLP]; out_projs[t]: score -> K_t logits.
        self.projs = nn.ModuleList(
            nn.ModuleList(
                MLP(in_dim=d_model, hidden_dim=hidden, out_dim=d_model, **mlp) for _ in range(2)
            )
            for _ in self.tasks
        )
        self.out_projs = nn.ModuleList(
            MLP(in_dim=1, hidden_dim=d_model, out_dim=TASK_CLASSES[t], **mlp) for t in self.tasks
        )
        xavier_init_matrices(self)

    @property
    def num_layers(self) -> int:
        return len(self.concat_transformer.layers)

    def pool(self, masks: Tensor, mask_features: Tensor) -> Tensor:
        """Tensor[n, h, w] binary masks, Tensor[C, h, w] features -> Tensor[n, C] pooled."""
        stack = self.features_transformer
        layer = stack.layers[0] if stack is not None else None
        if self.dense_feature_attention:
            return attention_pool_dense(layer, masks, mask_features)
        return attention_pool_sparse(layer, masks, mask_features)

    def scores(self, inputs: OrderInputs) -> dict[str, list[Tensor]]:
        """The contract's call: :meth:`forward` on the bundle's embeddings, masks and features
        (raw logits; the inherited ``log_probs`` normalises them)."""
        return self(inputs.mask_embed, inputs.masks, inputs.mask_features)

    def forward(
        self, mask_embed: Tensor, masks: Tensor, mask_features: Tensor
    ) -> dict[str, list[Tensor]]:
        """Order logits of every ordered instance pair of one image.

        Args:
            mask_embed: Tensor[n, C] mask embeddings of the selected queries.
            masks: Tensor[n, h, w] their binary (0/1) masks at mask-feature resolution.
            mask_features: Tensor[C, h, w] the pixel decoder's mask features.

        Returns:
            ``{task: [Tensor[n, n, K_task] per layer]}`` for each configured task
            (``"occlusion"``: K=2, ``"depth"``: K=3), raw logits, ``num_layers`` entries, last
            layer last. ``[i, j]`` is the relation of row instance i to column instance j.
        """
        n = mask_embed.shape[0]
        if masks.shape[0] != n or masks.shape[1:] != mask_features.shape[1:]:
            raise ValueError(
                f"order head inputs disagree: mask_embed {tuple(mask_embed.shape)}, masks "
                f"{tuple(masks.shape)}, mask_features {tuple(mask_features.shape)}"
            )
        outputs: dict[str, list[Tensor]] = {t: [] for t in self.tasks}
        if n == 0:
            for t in self.tasks:
                empty = mask_embed.new_zeros(0, 0, TASK_CLASSES[t])
                outputs[t] = [empty] * self.num_layers
            return outputs
        pooled = self.pool(masks, mask_features)  # n x C
        e0 = self.proj_embed_to_input_size(mask_embed)  # n x D
        f0 = self.proj_feats_to_input_size(pooled)  # n x D
        layers = self.concat_transformer(torch.cat([e0, f0], dim=0))  # per layer: 2n x D
        for x in layers:
            a, c = x[:n], x[n:]
            for t, task in enumerate(self.tasks):
                embed_mlp, feat_mlp = self.projs[t]
                e, f = embed_mlp(a), feat_mlp(c)
                if self.add_input_representations:
                    e, f = e + e0, f + f0
                scores = f @ e.t() if self.transpose_queries else e @ f.t()  # n x n
                outputs[task].append(self.out_projs[t](scores[..., None]))  # n x n x K
                if self.chain_task_mlps:
                    a, c = e, f
        return outputs
