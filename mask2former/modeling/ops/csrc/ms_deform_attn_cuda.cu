// CUDA forward and backward kernels of multi-scale deformable attention.
//
// Shapes are documented in ms_deform_attn.cpp. One warp handles one (b, q, m) triple; its
// lanes split the Dh channels. Bilinear sampling follows grid_sample(align_corners=False,
// padding_mode="zeros"): pixel (i, j) of a level of size (h, w) has its centre at
// ((j + 0.5) / w, (i + 0.5) / h) in normalised coordinates, and taps outside the level
// read zero. Accumulation happens in at::opmath_type (float32 for float16 / bfloat16); the
// value gradient is accumulated with atomics in that type and cast back at the end.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

namespace instaformer {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

struct Geometry {
  int64_t batch;  // images in this launch (one im2col chunk)
  int64_t S, M, Dh, L, P, Lq;
};

// Reads the four bilinear taps of channel c at pixel coordinates (x, y) of one level.
// base points at value[b, start_l, m, c]; consecutive pixels are pixel_stride apart.
template <typename scalar_t, typename acc_t>
struct Taps {
  int64_t off[4];
  bool ok[4];
  acc_t wgt[4];  // bilinear weights: (y0, x0), (y0, x1), (y1, x0), (y1, x1)
  acc_t lx, ly, hx, hy;

  __device__ Taps(acc_t x, acc_t y, int64_t h, int64_t w, int64_t pixel_stride) {
    const acc_t fx = floor(x);
    const acc_t fy = floor(y);
    const int64_t x0 = static_cast<int64_t>(fx);
    const int64_t y0 = static_cast<int64_t>(fy);
    lx = x - fx;
    ly = y - fy;
    hx = acc_t(1) - lx;
    hy = acc_t(1) - ly;
    const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
    const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
    wgt[0] = hy * hx;
    wgt[1] = hy * lx;
    wgt[2] = ly * hx;
    wgt[3] = ly * lx;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      ok[k] = xs[k] >= 0 && xs[k] < w && ys[k] >= 0 && ys[k] < h;
      off[k] = ok[k] ? (ys[k] * w + xs[k]) * pixel_stride : 0;
    }
  }
};

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffff, v, offset);
  }
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    scalar_t* __restrict__ out,
    Geometry g) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= g.batch * g.Lq * g.M) return;
  const int64_t m = warp % g.M;
  const int64_t b = warp / (g.M * g.Lq);
  const int64_t pixel_stride = g.M * g.Dh;
  const scalar_t* loc_w = loc + warp * g.L * g.P * 2;
  const scalar_t* attn_w = attn + warp * g.L * g.P;
  for (int64_t c = lane; c < g.Dh; c += kWarp) {
    acc_t acc = 0;
    for (int64_t l = 0; l < g.L; ++l) {
      const int64_t h = shapes[2 * l];
      const int64_t w = shapes[2 * l + 1];
      const scalar_t* base = value + ((b * g.S + starts[l]) * g.M + m) * g.Dh + c;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t i = l * g.P + p;
        const acc_t x = static_cast<acc_t>(loc_w[2 * i]) * w - acc_t(0.5);
        const acc_t y = static_cast<acc_t>(loc_w[2 * i + 1]) * h - acc_t(0.5);
        if (!(x > -1 && y > -1 && x < w && y < h)) continue;
        const Taps<scalar_t, acc_t> t(x, y, h, w, pixel_stride);
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (t.ok[k]) sample += t.wgt[k] * static_cast<acc_t>(base[t.off[k]]);
        }
        acc += static_cast<acc_t>(attn_w[i]) * sample;
      }
    }
    out[warp * g.Dh + c] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    acc_t* __restrict__ grad_value,
    scalar_t* __restrict__ grad_loc,
    scalar_t* __restrict__ grad_attn,
    Geometry g) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  // the whole warp leaves together, so the shuffles below always see 32 active lanes
  if (warp >= g.batch * g.Lq * g.M) return;
  const int64_t m = warp % g.M;
  const int64_t b = warp / (g.M * g.Lq);
  const int64_t pixel_stride = g.M * g.Dh;
  const scalar_t* loc_w = loc + warp * g.L * g.P * 2;
  const scalar_t* attn_w = attn + warp * g.L * g.P;
  const scalar_t* grad_out_w = grad_out + warp * g.Dh;
  for (int64_t l = 0; l < g.L; ++l) {
    const int64_t h = shapes[2 * l];
    const int64_t w = shapes[2 * l + 1];
    const int64_t level_offset = ((b * g.S + starts[l]) * g.M + m) * g.Dh;
    for (int64_t p = 0; p < g.P; ++p) {
      const int64_t i = l * g.P + p;
      const acc_t x = static_cast<acc_t>(loc_w[2 * i]) * w - acc_t(0.5);
      const acc_t y = static_cast<acc_t>(loc_w[2 * i + 1]) * h - acc_t(0.5);
      // uniform across the warp: every lane reads the same location
      if (!(x > -1 && y > -1 && x < w && y < h)) continue;
      const Taps<scalar_t, acc_t> t(x, y, h, w, pixel_stride);
      const acc_t a = static_cast<acc_t>(attn_w[i]);
      acc_t g_attn = 0, g_x = 0, g_y = 0;
      for (int64_t c = lane; c < g.Dh; c += kWarp) {
        const acc_t go = static_cast<acc_t>(grad_out_w[c]);
        acc_t v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          v[k] = t.ok[k] ? static_cast<acc_t>(value[level_offset + t.off[k] + c]) : acc_t(0);
          if (t.ok[k]) atomicAdd(grad_value + level_offset + t.off[k] + c, a * go * t.wgt[k]);
        }
        const acc_t sample = t.wgt[0] * v[0] + t.wgt[1] * v[1] + t.wgt[2] * v[2] + t.wgt[3] * v[3];
        g_attn += go * sample;
        g_x += go * (t.hy * (v[1] - v[0]) + t.ly * (v[3] - v[2]));
        g_y += go * (t.hx * (v[2] - v[0]) + t.lx * (v[3] - v[1]));
      }
      g_attn = warp_sum(g_attn);
      g_x = warp_sum(g_x);
      g_y = warp_sum(g_y);
      if (lane == 0) {
        grad_attn[warp * g.L * g.P + i] = static_cast<scalar_t>(g_attn);
        // d x / d loc_x = w and d y / d loc_y = h
        grad_loc[(warp * g.L * g.P + i) * 2] = static_cast<scalar_t>(a * g_x * w);
        grad_loc[(warp * g.L * g.P + i) * 2 + 1] = static_cast<scalar_t>(a * g_y * h);
      }
    }
  }
}

void check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& loc,
    const at::Tensor& attn,
    int64_t im2col_step) {
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn: value must be a CUDA tensor");
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [B, S, M, Dh], got ", value.sizes());
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [B, Lq, M, L, P, 2], got ", loc.sizes());
  TORCH_CHECK(attn.dim() == 5, "ms_deform_attn: attention_weights must be [B, Lq, M, L, P], got ",
              attn.sizes());
  TORCH_CHECK(loc.sizes().slice(0, 5) == attn.sizes(),
              "ms_deform_attn: sampling_locations ", loc.sizes(), " and attention_weights ",
              attn.sizes(), " disagree");
  TORCH_CHECK(loc.size(0) == value.size(0) && loc.size(2) == value.size(2),
              "ms_deform_attn: batch/heads of sampling_locations ", loc.sizes(),
              " do not match value ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 &&
                  spatial_shapes.size(0) == loc.size(3),
              "ms_deform_attn: spatial_shapes must be [L, 2] with L = ", loc.size(3), ", got ",
              spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == loc.size(3),
              "ms_deform_attn: level_start_index must be [L], got ", level_start_index.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(loc.scalar_type() == value.scalar_type() && attn.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype, "
              "got ", value.scalar_type(), ", ", loc.scalar_type(), ", ", attn.scalar_type());
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &loc, &attn}) {
    TORCH_CHECK(t->device() == value.device(),
                "ms_deform_attn: all inputs must be on ", value.device(), ", got ", t->device());
  }
  TORCH_CHECK(im2col_step > 0, "ms_deform_attn: im2col_step must be positive, got ", im2col_step);
}

Geometry geometry(const at::Tensor& value, const at::Tensor& loc) {
  return Geometry{value.size(0), value.size(1), value.size(2), value.size(3),
                  loc.size(3),   loc.size(4),   loc.size(1)};
}

int64_t blocks_for(const Geometry& g) {
  const int64_t threads = g.batch * g.Lq * g.M * kWarp;
  return (threads + kThreads - 1) / kThreads;
}

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& loc_in,
    const at::Tensor& attn_in,
    int64_t im2col_step) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in, im2col_step);
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = spatial_shapes_in.contiguous();
  const at::Tensor level_start_index = level_start_index_in.contiguous();
  const at::Tensor loc = loc_in.contiguous();
  const at::Tensor attn = attn_in.contiguous();
  const Geometry full = geometry(value, loc);
  at::Tensor out = at::empty({full.batch, full.Lq, full.M * full.Dh}, value.options());
  if (out.numel() == 0) return out;
  if (full.L * full.P == 0) return out.zero_();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        for (int64_t b0 = 0; b0 < full.batch; b0 += im2col_step) {
          Geometry g = full;
          g.batch = std::min(im2col_step, full.batch - b0);
          forward_kernel<scalar_t, acc_t><<<blocks_for(g), kThreads, 0, stream>>>(
              value.const_data_ptr<scalar_t>() + b0 * full.S * full.M * full.Dh,
              spatial_shapes.const_data_ptr<int64_t>(),
              level_start_index.const_data_ptr<int64_t>(),
              loc.const_data_ptr<scalar_t>() + b0 * full.Lq * full.M * full.L * full.P * 2,
              attn.const_data_ptr<scalar_t>() + b0 * full.Lq * full.M * full.L * full.P,
              out.mutable_data_ptr<scalar_t>() + b0 * full.Lq * full.M * full.Dh,
              g);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output_in,
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& loc_in,
    const at::Tensor& attn_in,
    int64_t im2col_step) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, loc_in, attn_in, im2col_step);
  const c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = spatial_shapes_in.contiguous();
  const at::Tensor level_start_index = level_start_index_in.contiguous();
  const at::Tensor loc = loc_in.contiguous();
  const at::Tensor attn = attn_in.contiguous();
  const Geometry full = geometry(value, loc);
  TORCH_CHECK(grad_output_in.sizes() == at::IntArrayRef({full.batch, full.Lq, full.M * full.Dh}),
              "ms_deform_attn: grad_output must be [B, Lq, M * Dh], got ", grad_output_in.sizes());
  const at::Tensor grad_output = grad_output_in.to(value.scalar_type()).contiguous();
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  at::Tensor grad_loc = at::zeros_like(loc);
  at::Tensor grad_attn = at::zeros_like(attn);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (full.L * full.P > 0 && full.Lq > 0 && grad_output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          for (int64_t b0 = 0; b0 < full.batch; b0 += im2col_step) {
            Geometry g = full;
            g.batch = std::min(im2col_step, full.batch - b0);
            const int64_t value_off = b0 * full.S * full.M * full.Dh;
            const int64_t attn_off = b0 * full.Lq * full.M * full.L * full.P;
            backward_kernel<scalar_t, acc_t><<<blocks_for(g), kThreads, 0, stream>>>(
                grad_output.const_data_ptr<scalar_t>() + b0 * full.Lq * full.M * full.Dh,
                value.const_data_ptr<scalar_t>() + value_off,
                spatial_shapes.const_data_ptr<int64_t>(),
                level_start_index.const_data_ptr<int64_t>(),
                loc.const_data_ptr<scalar_t>() + attn_off * 2,
                attn.const_data_ptr<scalar_t>() + attn_off,
                grad_value.mutable_data_ptr<acc_t>() + value_off,
                grad_loc.mutable_data_ptr<scalar_t>() + attn_off * 2,
                grad_attn.mutable_data_ptr<scalar_t>() + attn_off,
                g);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(instaformer, CUDA, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace instaformer
