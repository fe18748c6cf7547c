// Operator schemas of the multi-scale deformable attention op.
//
// Shape shorthand: B batch, S flattened value length, M heads, Dh channels per head,
// L levels, P sampling points, Lq queries.
//   value               [B, S, M, Dh]        float64 / float32 / float16 / bfloat16
//   spatial_shapes      [L, 2] int64         (h, w) of each level
//   level_start_index   [L] int64            offset of each level in S
//   sampling_locations  [B, Lq, M, L, P, 2]  normalised (x, y), same dtype as value
//   attention_weights   [B, Lq, M, L, P]     same dtype as value
//   output              [B, Lq, M * Dh]
// The CUDA implementations are registered in ms_deform_attn_cuda.cu; the fake (meta)
// kernels and the autograd formula are registered from Python (kernel.py).

#include <torch/library.h>

TORCH_LIBRARY(instaformer, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, int im2col_step) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "int im2col_step) -> (Tensor, Tensor, Tensor)");
}
