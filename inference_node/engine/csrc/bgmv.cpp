// Fused batched LoRA for CPU decode (Punica BGMV semantics), one op per projection:
//
//   for every token t with slot s = idx[t] >= 0:
//     y[t, :] += sum_{r < rank} (A[s, r, :] . x[t, :]) * B[s, r, :]
//
// A: [slots + 1, max_rank, in], B: [slots + 1, max_rank, out] (B transposed and already
// scaled), x: [tokens, in], y: [tokens, out], idx: [tokens] (int64, -1 = no adapter).
// Reads each token's adapter rows in place: no gathered copies of the weights (the torch
// "gather" kernel copies tokens * rank * (in + out) floats per projection), and no per-run
// ops (the "segments" kernel issues two matmuls per run of a slot). Tokens are split over
// torch's intra-op threads; the dot products and the row updates vectorize (-O3 -march).
#include <torch/extension.h>
#include <ATen/Parallel.h>

namespace {

template <typename scalar_t>
void bgmv_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                 const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                 const int64_t* __restrict__ idx, int64_t tokens, int64_t in, int64_t out,
                 int64_t max_rank, int64_t rank, int64_t slot_count) {
  at::parallel_for(0, tokens, 1, [&](int64_t begin, int64_t end) {
    float shrink[256];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = idx[t];
      if (slot < 0 || slot >= slot_count) continue;
      const scalar_t* xt = x + t * in;
      const scalar_t* as = a + slot * max_rank * in;
      const scalar_t* bs = b + slot * max_rank * out;
      scalar_t* yt = y + t * out;
      for (int64_t r = 0; r < rank; ++r) {
        const scalar_t* ar = as + r * in;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < in; ++i) dot += static_cast<float>(ar[i]) * static_cast<float>(xt[i]);
        shrink[r] = dot;
      }
      for (int64_t r = 0; r < rank; ++r) {
        const scalar_t* br = bs + r * out;
        const float s = shrink[r];
#pragma omp simd
        for (int64_t o = 0; o < out; ++o) yt[o] = static_cast<scalar_t>(static_cast<float>(yt[o]) + s * static_cast<float>(br[o]));
      }
    }
  });
}

void bgmv_(torch::Tensor y, torch::Tensor x, torch::Tensor a, torch::Tensor b, torch::Tensor idx,
           int64_t rank) {
  TORCH_CHECK(!y.is_cuda() && !x.is_cuda(), "bgmv_ is the CPU kernel");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && a.dim() == 3 && b.dim() == 3 && idx.dim() == 1,
              "bgmv_: x [tokens, in], y [tokens, out], a [slots, rank, in], b [slots, rank, out], idx [tokens]");
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous() && a.is_contiguous() && b.is_contiguous() &&
                  idx.is_contiguous(),
              "bgmv_: every tensor must be contiguous");
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "bgmv_: idx must be int64");
  TORCH_CHECK(x.scalar_type() == y.scalar_type() && a.scalar_type() == x.scalar_type() &&
                  b.scalar_type() == x.scalar_type(),
              "bgmv_: x, y, a and b must share a dtype");
  const int64_t tokens = x.size(0), in = x.size(1), out = y.size(1);
  TORCH_CHECK(y.size(0) == tokens && idx.size(0) == tokens, "bgmv_: token counts differ");
  TORCH_CHECK(a.size(2) == in && b.size(2) == out && a.size(0) == b.size(0) && a.size(1) == b.size(1),
              "bgmv_: adapter shapes do not match x and y");
  TORCH_CHECK(rank >= 0 && rank <= a.size(1) && rank <= 256, "bgmv_: rank out of range");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bgmv_", [&] {
    bgmv_kernel<scalar_t>(y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), tokens, in, out,
                          a.size(1), rank, a.size(0));
  });
}

}  // namespace

TORCH_LIBRARY(openledger, m) {
  m.def("bgmv_(Tensor(a!) y, Tensor x, Tensor a, Tensor b, Tensor idx, int rank) -> ()");
}

TORCH_LIBRARY_IMPL(openledger, CPU, m) { m.impl("bgmv_", &bgmv_); }
