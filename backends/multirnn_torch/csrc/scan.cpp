// The generic path's time loops (multirnn_torch.backprop) in native code.
//
// Each call runs the whole time loop of one layer: per step one matrix product on ATen
// (the recurrent product, or the backward pass's product with the transposed recurrent
// kernel), the transcendental activations as ATen's vectorised in-place ops, and the rest
// of the cell (clamped gates, cell state, output, masks, the backward pass's per-step
// gradient coefficients) as plain loops over batch x units. The buffers and their layout
// are those of the Python loop, which allocates them and derives what it can for all steps
// at once; these functions only replace its per-step work, so both loops compute the same
// numbers (up to the rounding of the products, see below). Compiled on first use by
// multirnn_torch.native.
//
// Threads: the recurrence of one batch row never reads another row, so the batch is split
// into contiguous row ranges, one per intra-op thread (at::parallel_for), and each thread
// walks the whole sequence for its rows with single-threaded products. No thread waits for
// another between steps, which is what small per-step products need to gain from more
// threads. A row's products then have fewer rows (M); BLAS may round them differently by an
// ulp, so results can differ in the last bits with the number of threads.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/elu.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/hardsigmoid.h>
#include <ATen/ops/log1p.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/selu.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace {

// Must match multirnn_torch.native.LAYERS and ACTIVATIONS.
enum Layer : int64_t { kSimpleRNN = 0, kLSTM = 1, kGRU = 2 };
enum Activation : int64_t {
  kLinear = 0,
  kTanh,
  kSigmoid,
  kHardSigmoid,
  kHardSigmoidRelu6,
  kRelu,
  kExponential,
  kSoftsign,
  kSoftplus,
  kElu,
  kSelu,
  kClamp01,  // a piecewise-linear gate whose affine part was folded into the weights
  kActivationCount
};

using Tensor = at::Tensor;
using OptTensor = std::optional<Tensor>;

// The named activation in place, with the same ATen ops as the Python loop's ACTIVATIONS.
// (Tensors by value: handles, and the functional in-place ops take non-const references.)
void activate_(Tensor v, int64_t act) {
  switch (act) {
    case kLinear:
      return;
    case kTanh:
      v.tanh_();
      return;
    case kSigmoid:
      v.sigmoid_();
      return;
    case kHardSigmoid:
      v.mul_(0.2).add_(0.5).clamp_(0.0, 1.0);
      return;
    case kHardSigmoidRelu6:
      at::hardsigmoid_(v);
      return;
    case kRelu:
      v.relu_();
      return;
    case kExponential:
      v.exp_();
      return;
    case kSoftsign:
      v.div_(v.abs().add_(1.0));
      return;
    case kSoftplus:
      v.copy_(at::log1p(at::exp(v.abs().neg())).add(v.clamp_min(0.0)));
      return;
    case kElu:
      at::elu_(v);
      return;
    case kSelu:
      at::selu_(v);
      return;
    case kClamp01:
      v.clamp_(0.0, 1.0);
      return;
    default:
      TORCH_CHECK(false, "multirnn native scan: unknown activation code ", act);
  }
}

// out = activation(src), out of place.
void activate_into(Tensor out, const Tensor& src, int64_t act) {
  if (act == kTanh) {
    at::tanh_out(out, src);
  } else if (act == kSigmoid) {
    at::sigmoid_out(out, src);
  } else {
    out.copy_(src);
    activate_(out, act);
  }
}

#if defined(_MSC_VER)
#define MRNN_RESTRICT __restrict
#else
#define MRNN_RESTRICT __restrict__
#endif

// The elementwise helpers are branch-free selects, so that the compiler vectorises the loops
// and random data causes no mispredicted branches.

// clamp(v, 0, 1) as ATen computes it: NaN stays NaN (both comparisons are false).
template <typename T>
inline T clamp01(T v) {
  const T low = v < T(0) ? T(0) : v;
  return low > T(1) ? T(1) : low;
}

template <typename T>
inline void clamp01_row(T* MRNN_RESTRICT p, int64_t n) {
  for (int64_t j = 0; j < n; ++j) p[j] = clamp01(p[j]);
}

// torch.lerp(start, end, weight) as ATen's scalar kernel computes it.
template <typename T>
inline T lerp(T start, T end, T weight) {
  const T diff = end - start;
  const T from_start = start + weight * diff;
  const T from_end = end - diff * (T(1) - weight);
  return std::abs(weight) < T(0.5) ? from_start : from_end;
}

// LSTM: c = f * c_prev + i * g, one row.
template <typename T>
inline void lstm_c_row(const T* MRNN_RESTRICT i, const T* MRNN_RESTRICT f,
                       const T* MRNN_RESTRICT g, const T* MRNN_RESTRICT c_prev,
                       T* MRNN_RESTRICT c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) c[j] = f[j] * c_prev[j] + i[j] * g[j];
}

template <typename T>
inline void mul_row(T* MRNN_RESTRICT out, const T* MRNN_RESTRICT by, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = out[j] * by[j];
}

template <typename T>
inline void copy_row(T* MRNN_RESTRICT out, const T* MRNN_RESTRICT from, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = from[j];
}

// GRU: h = lerp(hh, h_prev, z), one row.
template <typename T>
inline void gru_h_row(const T* MRNN_RESTRICT hh, const T* MRNN_RESTRICT h_prev,
                      const T* MRNN_RESTRICT z, T* MRNN_RESTRICT h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) h[j] = lerp(hh[j], h_prev[j], z[j]);
}

// A (rows, cols) block with unit column stride: element (b, j) at p[b * ld + j].
template <typename T>
struct Block {
  T* p;
  int64_t ld;
  T& operator()(int64_t b, int64_t j) const { return p[b * ld + j]; }
};

// Step t of a (time, rows, width) buffer.
template <typename T>
Block<T> step_block(const Tensor& buffer, int64_t t) {
  return {buffer.data_ptr<T>() + t * buffer.stride(0), buffer.stride(1)};
}

// A (rows, width) matrix.
template <typename T>
Block<T> matrix(const Tensor& m) {
  return {m.data_ptr<T>(), m.stride(0)};
}

// The keep flags of step t of a (time, rows) boolean mask, or nullptr without a mask.
inline const bool* keep_row(const OptTensor& mask, int64_t t) {
  return mask ? mask->data_ptr<bool>() + t * mask->stride(0) : nullptr;
}

// Rows [b0, b1) of a batch: dimension 1 of (time, batch, ...) buffers and masks, dimension 0
// of (batch, width) states.
struct Rows {
  int64_t b0, n;
  Tensor steps(const Tensor& x) const { return x.narrow(1, b0, n); }
  Tensor batch(const Tensor& x) const { return x.narrow(0, b0, n); }
  OptTensor steps(const OptTensor& x) const { return x ? OptTensor(steps(*x)) : std::nullopt; }
  OptTensor batch(const OptTensor& x) const { return x ? OptTensor(batch(*x)) : std::nullopt; }
  // a recurrent mask, (batch, u) or per gate (G, batch, u), and its Hin, (time, [G,] batch, u)
  OptTensor mask_rows(const OptTensor& x) const {
    return x ? OptTensor(x->narrow(x->dim() - 2, b0, n)) : std::nullopt;
  }
};

// Rows per thread at least: smaller batches run on one thread.
constexpr int64_t kRowGrain = 8;

// at::parallel_for over the batch rows. The worker threads take the caller's thread-local
// state (grad mode, inference mode: OpenMP's threads do not inherit it), and the ops inside
// dispatch below autograd: they only fill buffers the caller owns.
template <typename F>
void for_row_ranges(int64_t batch, const F& f) {
  const at::ThreadLocalState state;
  at::parallel_for(0, batch, kRowGrain, [&](int64_t b0, int64_t b1) {
    at::ThreadLocalStateGuard state_guard(state);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    f(Rows{b0, b1 - b0});
  });
}

void check_contiguous(const Tensor& t, const char* what) {
  TORCH_CHECK(t.is_contiguous(), "multirnn native scan: ", what, " must be contiguous");
}

void check_codes(int64_t layer, int64_t act, int64_t gate) {
  TORCH_CHECK(layer >= kSimpleRNN && layer <= kGRU, "multirnn native scan: layer code ", layer);
  TORCH_CHECK(act >= 0 && act < kActivationCount, "multirnn native scan: activation code ", act);
  TORCH_CHECK(layer == kSimpleRNN || (gate >= 0 && gate < kActivationCount),
              "multirnn native scan: gate activation code ", gate);
}

void check_dtype(const Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "multirnn native scan: float32 or float64, got ", t.scalar_type());
}

void check_mask(const OptTensor& mask) {
  if (!mask) return;
  check_contiguous(*mask, "the mask");
  TORCH_CHECK(mask->scalar_type() == at::kBool, "multirnn native scan: the mask is bool");
}

// -- recurrent dropout with one mask per gate -------------------------------------------------
//
// A per-gate mask mr is (G, rows, u) and the masked states Hin (time, G, rows, u): gate g's
// product reads h * mr_g, one product per gate written straight into the gate's columns
// (measured against one batched product plus a transposing add: as fast on small layers,
// faster on large ones, which the extra passes over the gates' columns cost more).

// out (rows, n u) = [bias +] hin_g U_g, or += (add), for the first n gates.
void gate_products(const Tensor& out, bool add, const Tensor& hin, const Tensor& U,
                   const OptTensor& bias, int64_t n, int64_t u) {
  for (int64_t g = 0; g < n; ++g) {
    Tensor cols = out.narrow(1, g * u, u);
    const Tensor h = hin.select(0, g), block = U.narrow(1, g * u, u);
    if (add) {
      cols.addmm_(h, block);
    } else if (bias) {
      at::addmm_out(cols, bias->narrow(0, g * u, u), h, block);
    } else {
      at::mm_out(cols, h, block);
    }
  }
}

// dhin = sum_g (dz_g U_g^T) * mr_g over the gates of dz's columns (rows, n u): the gradient
// that reaches h through the per-gate products; dhg is a (G, rows, u) buffer.
template <typename T>
void gate_products_back(const Tensor& dhin, const Tensor& dz, const Tensor& Ut,
                        const Tensor& mr, Tensor& dhg, int64_t u) {
  const int64_t n = dz.size(1) / u, rows = dz.size(0);
  for (int64_t g = 0; g < n; ++g) {
    Tensor part = dhg.select(0, g);
    at::mm_out(part, dz.narrow(1, g * u, u), Ut.narrow(0, g * u, u));
  }
  const T* src = dhg.data_ptr<T>();
  const T* m = mr.data_ptr<T>();
  const int64_t s_g = dhg.stride(0), m_g = mr.stride(0), m_b = mr.stride(1);
  const Block<T> out = matrix<T>(dhin);
  for (int64_t b = 0; b < rows; ++b) {
    T* MRNN_RESTRICT o = &out(b, 0);
    const T* MRNN_RESTRICT s0 = src + b * u;
    const T* MRNN_RESTRICT k0 = m + b * m_b;
    for (int64_t j = 0; j < u; ++j) o[j] = s0[j] * k0[j];
    for (int64_t g = 1; g < n; ++g) {
      const T* MRNN_RESTRICT sg = s0 + g * s_g;
      const T* MRNN_RESTRICT kg = k0 + g * m_g;
      for (int64_t j = 0; j < u; ++j) o[j] = o[j] + sg[j] * kg[j];
    }
  }
}

// -- forward ------------------------------------------------------------------------------

// The forward loop over some rows (all tensors already cut to them). U_zr and U_h are the
// GRU's (reset_after=False) column blocks of U.
template <typename T>
void forward_rows(int64_t layer, int64_t act, int64_t gate, bool reset_after, const Tensor& A,
                  const Tensor& U, const Tensor& U_zr, const Tensor& U_h,
                  const OptTensor& bias_rec, const Tensor& h0, const Tensor& c0,
                  const OptTensor& mask, const OptTensor& mr, const Tensor& H,
                  const OptTensor& Hin, const OptTensor& C, const OptTensor& R) {
  const int64_t time = A.size(0), batch = A.size(1), u = H.size(2);
  const bool fused_gate = gate == kClamp01;
  std::vector<Tensor> As = layer == kGRU ? std::vector<Tensor>() : A.unbind(0);
  std::vector<Tensor> Hs = H.unbind(0);
  std::vector<Tensor> Hins = Hin ? Hin->unbind(0) : std::vector<Tensor>();
  std::vector<Tensor> Cs = C ? C->unbind(0) : std::vector<Tensor>();
  std::vector<Tensor> Rs = R && !reset_after ? R->unbind(0) : std::vector<Tensor>();
  std::vector<Tensor> gates, cands;
  Tensor rec;
  // per-step views, made once: ATen's ops take them (the clamped gates need none)
  if (layer == kLSTM) {  // columns i, f, o, c
    if (!fused_gate) gates = A.narrow(2, 0, 3 * u).unbind(0);
    cands = A.narrow(2, 3 * u, u).unbind(0);
  } else if (layer == kGRU) {  // columns z, r, h
    if (!fused_gate || !reset_after) gates = A.narrow(2, 0, 2 * u).unbind(0);
    cands = A.narrow(2, 2 * u, u).unbind(0);
    if (reset_after) rec = at::empty({batch, 3 * u}, A.options());  // the recurrent product
  }
  const bool per_gate = mr && mr->dim() == 3;
  Tensor h = h0, c = c0;
  for (int64_t t = 0; t < time; ++t) {
    const Tensor hin = mr ? at::mul_out(Hins[t], per_gate ? h.unsqueeze(0) : h, *mr) : h;
    // the candidate's (GRU, reset_after=False)
    const Tensor hin_h = per_gate && layer == kGRU ? hin.select(0, 2) : hin;
    const Block<T> a = step_block<T>(A, t), hp = matrix<T>(h), hi = matrix<T>(hin_h);
    const Block<T> ho = step_block<T>(H, t);
    const bool* k = keep_row(mask, t);
    if (layer == kLSTM) {  // columns i, f, o, c
      const Block<T> cp = matrix<T>(c), co = step_block<T>(*C, t);
      if (per_gate) {
        gate_products(As[t], true, hin, U, bias_rec, 4, u);
      } else {
        As[t].addmm_(hin, U);
      }
      if (!fused_gate) activate_(gates[t], gate);
      activate_(cands[t], act);
      for (int64_t b = 0; b < batch; ++b) {
        T* row = &a(b, 0);
        if (fused_gate) clamp01_row(row, 3 * u);
        lstm_c_row(row, row + u, row + 3 * u, &cp(b, 0), &co(b, 0), u);
      }
      activate_into(Hs[t], Cs[t], act);
      for (int64_t b = 0; b < batch; ++b) {
        if (k == nullptr || k[b]) {
          mul_row(&ho(b, 0), &a(b, 2 * u), u);
        } else {
          copy_row(&ho(b, 0), &hp(b, 0), u);
          copy_row(&co(b, 0), &cp(b, 0), u);
        }
      }
      c = Cs[t];
    } else if (layer == kGRU) {  // columns z, r, h
      const Block<T> rs = step_block<T>(*R, t);
      if (reset_after) {
        if (per_gate) {
          gate_products(rec, false, hin, U, bias_rec, 3, u);
        } else if (bias_rec) {
          at::addmm_out(rec, *bias_rec, hin, U);
        } else {
          at::mm_out(rec, hin, U);
        }
        const Block<T> rc = matrix<T>(rec);
        for (int64_t b = 0; b < batch; ++b) {
          T* MRNN_RESTRICT zr = &a(b, 0);
          const T* MRNN_RESTRICT rec_zr = &rc(b, 0);
          for (int64_t j = 0; j < 2 * u; ++j) zr[j] = zr[j] + rec_zr[j];
          if (fused_gate) clamp01_row(zr, 2 * u);
        }
        if (!fused_gate) activate_(gates[t], gate);
        for (int64_t b = 0; b < batch; ++b) {
          const T* MRNN_RESTRICT r = &a(b, u);
          T* MRNN_RESTRICT zh = &a(b, 2 * u);
          const T* MRNN_RESTRICT rh = &rc(b, 2 * u);
          T* MRNN_RESTRICT kept_rh = &rs(b, 0);
          for (int64_t j = 0; j < u; ++j) {
            kept_rh[j] = rh[j];
            zh[j] = zh[j] + r[j] * rh[j];
          }
        }
      } else {
        if (per_gate) {
          gate_products(gates[t], true, hin, U, bias_rec, 2, u);
        } else {
          gates[t].addmm_(hin, U_zr);
        }
        if (!fused_gate) activate_(gates[t], gate);
        for (int64_t b = 0; b < batch; ++b) {
          T* row = &a(b, 0);
          if (fused_gate) clamp01_row(row, 2 * u);
          const T* MRNN_RESTRICT r = row + u;
          const T* MRNN_RESTRICT h_in = &hi(b, 0);
          T* MRNN_RESTRICT q = &rs(b, 0);
          for (int64_t j = 0; j < u; ++j) q[j] = r[j] * h_in[j];
        }
        cands[t].addmm_(Rs[t], U_h);
      }
      activate_(cands[t], act);
      for (int64_t b = 0; b < batch; ++b) {
        if (k == nullptr || k[b]) {
          gru_h_row(&a(b, 2 * u), &hp(b, 0), &a(b, 0), &ho(b, 0), u);
        } else {
          copy_row(&ho(b, 0), &hp(b, 0), u);
        }
      }
    } else {
      As[t].addmm_(hin, U);
      activate_(As[t], act);
      for (int64_t b = 0; b < batch; ++b) {
        copy_row(&ho(b, 0), (k == nullptr || k[b]) ? &a(b, 0) : &hp(b, 0), u);
      }
    }
    h = Hs[t];
  }
}

// Runs the forward time loop over the buffers the Python loop allocated: A (time, batch,
// width) holds every step's pre-activations on entry and their activations on return; H,
// and where given Hin (h_{t-1} * mr), C (LSTM cell states) and R (GRU: r * h or the
// recurrent candidate product) are filled. mask is (time, batch) boolean.
void forward(int64_t layer, int64_t act, int64_t gate, bool reset_after, const Tensor& A,
             const Tensor& U, const OptTensor& bias_rec, const Tensor& h0, const Tensor& c0,
             const OptTensor& mask, const OptTensor& mr, const Tensor& H, const OptTensor& Hin,
             const OptTensor& C, const OptTensor& R) {
  check_codes(layer, act, gate);
  check_dtype(A);
  check_mask(mask);
  for (const Tensor* t : {&A, &h0, &c0, &H}) check_contiguous(*t, "buffers and states");
  for (const OptTensor* t : {&mr, &Hin, &C, &R}) {
    if (*t) check_contiguous(**t, "buffers and dropout masks");
  }
  TORCH_CHECK(layer != kLSTM || C, "multirnn native scan: LSTM needs C");
  TORCH_CHECK(layer != kGRU || R, "multirnn native scan: GRU needs R");
  TORCH_CHECK(!mr || Hin, "multirnn native scan: a recurrent mask needs Hin");
  TORCH_CHECK(!mr || mr->dim() == 2 || (mr->dim() == 3 && layer != kSimpleRNN),
              "multirnn native scan: a recurrent mask is (batch, u), or (G, batch, u) per gate");
  const int64_t u = H.size(2);
  Tensor U_zr, U_h;
  if (layer == kGRU && !reset_after) {
    // the column blocks; on long sequences as contiguous copies, which the products run
    // faster on (the copy costs more than it saves on a few steps)
    U_zr = U.narrow(1, 0, 2 * u);
    U_h = U.narrow(1, 2 * u, u);
    if (A.size(0) >= 8) {
      U_zr = U_zr.contiguous();
      U_h = U_h.contiguous();
    }
  }
  for_row_ranges(A.size(1), [&](const Rows& r) {
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "multirnn_scan::forward", [&] {
      forward_rows<scalar_t>(layer, act, gate, reset_after, r.steps(A), U, U_zr, U_h, bias_rec,
                             r.batch(h0), r.batch(c0), r.steps(mask), r.mask_rows(mr),
                             r.steps(H), r.mask_rows(Hin), r.steps(C), r.steps(R));
    });
  });
}

// -- backward ------------------------------------------------------------------------------
//
// Each walks back through time as the Python loop does and returns the gradients with
// respect to the initial states; DZ (and DREC) are filled with the gradients with respect
// to every step's pre-activations. mask is (time, batch) boolean; m = 1 keeps a step. The
// rows without a mask skip the multiplications by m, as the Python loop does.

// dh = dhin (* mr) (+ dh * (1 - m)): the gradient carried to the previous step.
template <typename T, bool Masked>
inline void carry_row(T m, const T* MRNN_RESTRICT dhin, const T* MRNN_RESTRICT mr,
                      T* MRNN_RESTRICT dh, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T v = dhin[j];
    if (mr != nullptr) v = v * mr[j];
    dh[j] = Masked ? v + dh[j] * (T(1) - m) : v;
  }
}

template <typename T>
inline void carry(const bool* k, int64_t b, const T* dhin, const T* mr, T* dh, int64_t n) {
  if (k) {
    carry_row<T, true>(T(k[b]), dhin, mr, dh, n);
  } else {
    carry_row<T, false>(T(1), dhin, mr, dh, n);
  }
}

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

// An activation's derivative as a function of its output y, for a row, in the forms the
// Python loop writes into the LSTM's coefficient buffer (backprop._derivative_into: tanh,
// sigmoid and clamp01; the rest as backprop.derivative), so that both give the same numbers.
template <typename T>
void derivative_row(int64_t act, const T* MRNN_RESTRICT y, T* MRNN_RESTRICT out, int64_t n) {
  switch (act) {
    case kLinear:
      for (int64_t j = 0; j < n; ++j) out[j] = T(1);
      return;
    case kTanh:
      for (int64_t j = 0; j < n; ++j) out[j] = T(1) - y[j] * y[j];
      return;
    case kSigmoid:
      for (int64_t j = 0; j < n; ++j) out[j] = y[j] - y[j] * y[j];
      return;
    case kClamp01:
      for (int64_t j = 0; j < n; ++j) out[j] = y[j] - y[j] * y[j] > T(0) ? T(1) : T(0);
      return;
    case kHardSigmoid:
      for (int64_t j = 0; j < n; ++j) out[j] = T((y[j] > T(0)) & (y[j] < T(1))) * T(0.2);
      return;
    case kHardSigmoidRelu6:
      for (int64_t j = 0; j < n; ++j) out[j] = T((y[j] > T(0)) & (y[j] < T(1))) * T(1.0 / 6.0);
      return;
    case kRelu:
      for (int64_t j = 0; j < n; ++j) out[j] = y[j] > T(0) ? T(1) : T(0);
      return;
    case kExponential:
      for (int64_t j = 0; j < n; ++j) out[j] = y[j];
      return;
    case kSoftsign:
      for (int64_t j = 0; j < n; ++j) {
        const T s = T(1) - std::abs(y[j]);
        out[j] = s * s;
      }
      return;
    case kSoftplus:
      for (int64_t j = 0; j < n; ++j) out[j] = -std::expm1(-y[j]);
      return;
    case kElu:
      for (int64_t j = 0; j < n; ++j) out[j] = y[j] > T(0) ? T(1) : y[j] + T(1);
      return;
    case kSelu:
      for (int64_t j = 0; j < n; ++j) {
        out[j] = y[j] > T(0) ? T(kSeluScale) : y[j] + T(kSeluScale * kSeluAlpha);
      }
      return;
    default:
      TORCH_CHECK(false, "multirnn native scan: unknown activation code ", act);
  }
}

// One row of one LSTM step. On entry dz holds the gates' derivatives (columns i, f, o) and
// the candidate's (column c), dact_ac the activation's derivative at ac = act(c); the
// coefficients are formed as the Python loop forms them for all steps at once, then
// multiplied by the incoming gradients.
template <typename T, bool Masked>
inline void lstm_back_row(T m, const T* MRNN_RESTRICT dH, T* MRNN_RESTRICT dh,
                          T* MRNN_RESTRICT dc, const T* MRNN_RESTRICT act_row,
                          const T* MRNN_RESTRICT c_prev, const T* MRNN_RESTRICT ac,
                          const T* MRNN_RESTRICT dact_ac, T* MRNN_RESTRICT dz, int64_t n) {
  const T* MRNN_RESTRICT i = act_row;
  const T* MRNN_RESTRICT f = act_row + n;
  const T* MRNN_RESTRICT o = act_row + 2 * n;
  const T* MRNN_RESTRICT g = act_row + 3 * n;
  T* MRNN_RESTRICT dz_i = dz;
  T* MRNN_RESTRICT dz_f = dz + n;
  T* MRNN_RESTRICT dz_o = dz + 2 * n;
  T* MRNN_RESTRICT dz_c = dz + 3 * n;
  for (int64_t j = 0; j < n; ++j) {
    const T d = dh[j] + dH[j];
    const T dhn = Masked ? d * m : d;
    T dcn = Masked ? dc[j] * m : dc[j];
    dcn = dcn + dhn * (dact_ac[j] * o[j]);
    dz_i[j] = dz_i[j] * g[j] * dcn;
    dz_f[j] = dz_f[j] * c_prev[j] * dcn;
    dz_o[j] = dz_o[j] * ac[j] * dhn;
    dz_c[j] = dz_c[j] * i[j] * dcn;
    const T dc_prev = dcn * f[j];
    dc[j] = Masked ? dc_prev + dc[j] * (T(1) - m) : dc_prev;
    dh[j] = d;
  }
}

// Some rows (all tensors cut to them); DZ is written, dh (zeros) and dc (dc_final) are
// updated in place.
template <typename T>
void lstm_backward_rows(int64_t act, int64_t gate, const Tensor& DZ, const Tensor& A,
                        const Tensor& C, const Tensor& c0, const Tensor& dH,
                        const OptTensor& mask, const OptTensor& mr, const Tensor& Ut,
                        const Tensor& dh, const Tensor& dc) {
  const int64_t time = A.size(0), batch = A.size(1), u = dH.size(2);
  std::vector<Tensor> DZs = DZ.unbind(0), Cs = C.unbind(0);
  Tensor dhin = at::empty({batch, u}, dh.options()), AC = at::empty({batch, u}, dh.options());
  const bool per_gate = mr && mr->dim() == 3;
  Tensor dhg = per_gate ? at::empty({4, batch, u}, dh.options()) : Tensor();
  std::vector<T> dact_ac(static_cast<size_t>(u));
  const Block<T> dhb = matrix<T>(dh), dcb = matrix<T>(dc), dib = matrix<T>(dhin);
  const Block<T> acb = matrix<T>(AC), c0b = matrix<T>(c0);
  const Block<T> mrb = mr ? matrix<T>(*mr) : Block<T>{nullptr, 0};
  for (int64_t t = time - 1; t >= 0; --t) {
    const Block<T> dz = step_block<T>(DZ, t), a = step_block<T>(A, t);
    const Block<T> dHt = step_block<T>(dH, t);
    const Block<T> cp = t > 0 ? step_block<T>(C, t - 1) : c0b;
    const bool* k = keep_row(mask, t);
    activate_into(AC, Cs[t], act);
    for (int64_t b = 0; b < batch; ++b) {
      T* z = &dz(b, 0);
      const T* row = &a(b, 0);
      derivative_row(gate, row, z, 3 * u);
      derivative_row(act, row + 3 * u, z + 3 * u, u);
      derivative_row(act, &acb(b, 0), dact_ac.data(), u);
      if (k) {
        lstm_back_row<T, true>(T(k[b]), &dHt(b, 0), &dhb(b, 0), &dcb(b, 0), row, &cp(b, 0),
                               &acb(b, 0), dact_ac.data(), z, u);
      } else {
        lstm_back_row<T, false>(T(1), &dHt(b, 0), &dhb(b, 0), &dcb(b, 0), row, &cp(b, 0),
                                &acb(b, 0), dact_ac.data(), z, u);
      }
    }
    if (per_gate) {
      gate_products_back<T>(dhin, DZs[t], Ut, *mr, dhg, u);
    } else {
      at::mm_out(dhin, DZs[t], Ut);
    }
    for (int64_t b = 0; b < batch; ++b) {
      carry<T>(k, b, &dib(b, 0), mr && !per_gate ? &mrb(b, 0) : nullptr, &dhb(b, 0), u);
    }
  }
}

// The GRU's step, up to the recurrent products: dz of z and h (and of r and the recurrent
// product with reset_after).
template <typename T, bool Masked, bool ResetAfter>
inline void gru_back_row(T m, const T* MRNN_RESTRICT dH, T* MRNN_RESTRICT dh,
                         const T* MRNN_RESTRICT k_z, const T* MRNN_RESTRICT k_h,
                         const T* MRNN_RESTRICT k_r, const T* MRNN_RESTRICT r,
                         T* MRNN_RESTRICT dz_z, T* MRNN_RESTRICT dz_r, T* MRNN_RESTRICT dz_h,
                         T* MRNN_RESTRICT drec_z, T* MRNN_RESTRICT drec_r,
                         T* MRNN_RESTRICT drec_h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T d = dh[j] + dH[j];
    const T dhn = Masked ? d * m : d;
    const T dzz = dhn * k_z[j], dzh = dhn * k_h[j];
    dz_z[j] = dzz;
    dz_h[j] = dzh;
    if (ResetAfter) {
      const T dzr = dzh * k_r[j];
      dz_r[j] = dzr;
      drec_z[j] = dzz;
      drec_r[j] = dzr;
      drec_h[j] = dzh * r[j];
    }
    dh[j] = d;
  }
}

// dh = (dhin (+ dq * r)) (* mr) + dhn * z (+ dh * (1 - m)).
template <typename T, bool Masked, bool ResetAfter>
inline void gru_carry_row(T m, const T* MRNN_RESTRICT dhin, const T* MRNN_RESTRICT dq,
                          const T* MRNN_RESTRICT r, const T* MRNN_RESTRICT mr,
                          const T* MRNN_RESTRICT z, T* MRNN_RESTRICT dh, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T v = dhin[j];
    if (!ResetAfter) v = v + dq[j] * r[j];
    if (mr != nullptr) v = v * mr[j];
    const T d = dh[j];
    const T carry = v + (Masked ? d * m : d) * z[j];
    dh[j] = Masked ? carry + d * (T(1) - m) : carry;
  }
}

// Some rows; dh (zeros) is updated in place. U_zr_t and U_h_t: the transposed column blocks
// (reset_after=False).
template <typename T, bool ResetAfter>
void gru_backward_rows(const Tensor& DZ, const OptTensor& DREC, const Tensor& K_z,
                       const Tensor& K_h, const Tensor& K_r, const Tensor& A, const Tensor& dH,
                       const OptTensor& mask, const OptTensor& mr, const Tensor& Ut,
                       const Tensor& U_zr_t, const Tensor& U_h_t, const Tensor& dh) {
  const int64_t time = A.size(0), batch = A.size(1), u = dH.size(2);
  std::vector<Tensor> DRECs = ResetAfter ? DREC->unbind(0) : std::vector<Tensor>();
  std::vector<Tensor> DZ_zr = DZ.narrow(2, 0, 2 * u).unbind(0);
  std::vector<Tensor> DZ_h = DZ.narrow(2, 2 * u, u).unbind(0);
  Tensor dhin = at::empty({batch, u}, dh.options()), dq = at::empty({batch, u}, dh.options());
  const Block<T> dhb = matrix<T>(dh), dib = matrix<T>(dhin), dqb = matrix<T>(dq);
  const bool per_gate = mr && mr->dim() == 3;
  // the per-gate products' buffer
  Tensor dhg = per_gate ? at::empty({3, batch, u}, dh.options()) : Tensor();
  // the mask the carry applies: the shared one (per gate, the products applied theirs)
  const Block<T> mrb = mr && !per_gate ? matrix<T>(*mr) : Block<T>{nullptr, 0};
  const Block<T> m_h = per_gate ? matrix<T>(mr->select(0, 2)) : Block<T>{nullptr, 0};
  const bool carry_mask = mr && !per_gate;
  for (int64_t t = time - 1; t >= 0; --t) {
    const Block<T> dz = step_block<T>(DZ, t), a = step_block<T>(A, t);
    const Block<T> dHt = step_block<T>(dH, t), kz = step_block<T>(K_z, t);
    const Block<T> kh = step_block<T>(K_h, t), kr = step_block<T>(K_r, t);
    const bool* k = keep_row(mask, t);
    const Block<T> drec = ResetAfter ? step_block<T>(*DREC, t) : dz;  // unused without
    for (int64_t b = 0; b < batch; ++b) {
      T* z = &dz(b, 0);
      T* rec = &drec(b, 0);
      if (k) {
        gru_back_row<T, true, ResetAfter>(T(k[b]), &dHt(b, 0), &dhb(b, 0), &kz(b, 0),
                                          &kh(b, 0), &kr(b, 0), &a(b, u), z, z + u, z + 2 * u,
                                          rec, rec + u, rec + 2 * u, u);
      } else {
        gru_back_row<T, false, ResetAfter>(T(1), &dHt(b, 0), &dhb(b, 0), &kz(b, 0), &kh(b, 0),
                                           &kr(b, 0), &a(b, u), z, z + u, z + 2 * u, rec,
                                           rec + u, rec + 2 * u, u);
      }
    }
    if (ResetAfter && per_gate) {
      gate_products_back<T>(dhin, DRECs[t], Ut, *mr, dhg, u);
    } else if (ResetAfter) {
      at::mm_out(dhin, DRECs[t], Ut);
    } else {
      at::mm_out(dq, DZ_h[t], U_h_t);
      for (int64_t b = 0; b < batch; ++b) {
        T* MRNN_RESTRICT dz_r = &dz(b, u);
        T* MRNN_RESTRICT q = &dqb(b, 0);
        const T* MRNN_RESTRICT k_r = &kr(b, 0);
        for (int64_t j = 0; j < u; ++j) dz_r[j] = q[j] * k_r[j];
        if (per_gate) {  // q reaches h through the candidate's product: under its mask
          const T* MRNN_RESTRICT mask_h = &m_h(b, 0);
          for (int64_t j = 0; j < u; ++j) q[j] = q[j] * mask_h[j];
        }
      }
      if (per_gate) {
        gate_products_back<T>(dhin, DZ_zr[t], U_zr_t, *mr, dhg, u);
      } else {
        at::mm_out(dhin, DZ_zr[t], U_zr_t);
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      const T* mrow = carry_mask ? &mrb(b, 0) : nullptr;
      if (k) {
        gru_carry_row<T, true, ResetAfter>(T(k[b]), &dib(b, 0), &dqb(b, 0), &a(b, u), mrow,
                                           &a(b, 0), &dhb(b, 0), u);
      } else {
        gru_carry_row<T, false, ResetAfter>(T(1), &dib(b, 0), &dqb(b, 0), &a(b, u), mrow,
                                            &a(b, 0), &dhb(b, 0), u);
      }
    }
  }
}

template <typename T, bool Masked>
inline void simple_back_row(T m, const T* MRNN_RESTRICT dH, T* MRNN_RESTRICT dh,
                            const T* MRNN_RESTRICT k, T* MRNN_RESTRICT dz, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T d = dh[j] + dH[j];
    dz[j] = (Masked ? d * m : d) * k[j];
    dh[j] = d;
  }
}

// Some rows; dh (zeros) is updated in place.
template <typename T>
void simple_backward_rows(const Tensor& DZ, const Tensor& K, const Tensor& dH,
                          const OptTensor& mask, const OptTensor& mr, const Tensor& Ut,
                          const Tensor& dh) {
  const int64_t time = DZ.size(0), batch = DZ.size(1), u = dH.size(2);
  std::vector<Tensor> DZs = DZ.unbind(0);
  Tensor dhin = at::empty({batch, u}, dh.options());
  const Block<T> dhb = matrix<T>(dh), dib = matrix<T>(dhin);
  const Block<T> mrb = mr ? matrix<T>(*mr) : Block<T>{nullptr, 0};
  for (int64_t t = time - 1; t >= 0; --t) {
    const Block<T> dz = step_block<T>(DZ, t), dHt = step_block<T>(dH, t);
    const Block<T> kk = step_block<T>(K, t);
    const bool* k = keep_row(mask, t);
    for (int64_t b = 0; b < batch; ++b) {
      if (k) {
        simple_back_row<T, true>(T(k[b]), &dHt(b, 0), &dhb(b, 0), &kk(b, 0), &dz(b, 0), u);
      } else {
        simple_back_row<T, false>(T(1), &dHt(b, 0), &dhb(b, 0), &kk(b, 0), &dz(b, 0), u);
      }
    }
    at::mm_out(dhin, DZs[t], Ut);
    for (int64_t b = 0; b < batch; ++b) {
      carry<T>(k, b, &dib(b, 0), mr ? &mrb(b, 0) : nullptr, &dhb(b, 0), u);
    }
  }
}

void check_backward(const Tensor& A, std::initializer_list<const Tensor*> buffers,
                    const OptTensor& mask, const OptTensor& mr) {
  check_dtype(A);
  check_mask(mask);
  for (const Tensor* t : buffers) check_contiguous(*t, "backward buffers");
  if (mr) check_contiguous(*mr, "the recurrent dropout mask");
}

// LSTM: DZ (time, batch, 4u) is written with the gradients of the pre-activations in the
// columns (i, f, o, c); A holds the forward activations, C the cell states, c0 the initial
// one. Returns (dh0, dc0).
std::vector<Tensor> lstm_backward(int64_t act, int64_t gate, const Tensor& DZ, const Tensor& A,
                                  const Tensor& C, const Tensor& c0, const Tensor& dH,
                                  const Tensor& dc_final, const OptTensor& mask,
                                  const OptTensor& mr, const Tensor& U) {
  check_codes(kLSTM, act, gate);
  check_backward(A, {&DZ, &A, &C, &c0, &dH}, mask, mr);
  const Tensor Ut = U.t().contiguous();  // BLAS is twice as fast on it
  Tensor dh = at::zeros_like(dc_final, at::MemoryFormat::Contiguous);
  Tensor dc = dc_final.clone(at::MemoryFormat::Contiguous);
  for_row_ranges(A.size(1), [&](const Rows& r) {
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "multirnn_scan::lstm_backward", [&] {
      lstm_backward_rows<scalar_t>(act, gate, r.steps(DZ), r.steps(A), r.steps(C),
                                   r.batch(c0), r.steps(dH), r.steps(mask), r.mask_rows(mr), Ut,
                                   r.batch(dh), r.batch(dc));
    });
  });
  return {dh, dc};
}

// GRU: DZ (time, batch, 3u) is written, and DREC (reset_after: the gradient with respect to
// the recurrent product); K_z, K_h, K_r the per-step coefficients; A the forward
// activations (z and r are read). Returns (dh0,).
std::vector<Tensor> gru_backward(bool reset_after, const Tensor& DZ, const OptTensor& DREC,
                                 const Tensor& K_z, const Tensor& K_h, const Tensor& K_r,
                                 const Tensor& A, const Tensor& dH, const OptTensor& mask,
                                 const OptTensor& mr, const Tensor& U) {
  check_backward(A, {&DZ, &K_z, &K_h, &K_r, &A, &dH}, mask, mr);
  TORCH_CHECK(!reset_after || (DREC && DREC->is_contiguous()),
              "multirnn native scan: reset_after needs a contiguous DREC");
  const int64_t u = dH.size(2);
  const Tensor Ut = U.t().contiguous();  // BLAS is twice as fast on it
  Tensor U_zr_t, U_h_t;
  if (!reset_after) {
    U_zr_t = U.narrow(1, 0, 2 * u).t().contiguous();
    U_h_t = U.narrow(1, 2 * u, u).t().contiguous();
  }
  Tensor dh = at::zeros({A.size(1), u}, A.options());
  for_row_ranges(A.size(1), [&](const Rows& r) {
    const Tensor dz = r.steps(DZ), kz = r.steps(K_z), kh = r.steps(K_h), kr = r.steps(K_r);
    const Tensor a = r.steps(A), dh_in = r.steps(dH), dh_rows = r.batch(dh);
    const OptTensor drec = r.steps(DREC), m = r.steps(mask), mrr = r.mask_rows(mr);
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "multirnn_scan::gru_backward", [&] {
      if (reset_after) {
        gru_backward_rows<scalar_t, true>(dz, drec, kz, kh, kr, a, dh_in, m, mrr, Ut, U_zr_t,
                                          U_h_t, dh_rows);
      } else {
        gru_backward_rows<scalar_t, false>(dz, drec, kz, kh, kr, a, dh_in, m, mrr, Ut, U_zr_t,
                                           U_h_t, dh_rows);
      }
    });
  });
  return {dh};
}

// SimpleRNN: DZ (time, batch, u) is written; K the activation's derivative. Returns (dh0,).
std::vector<Tensor> simple_backward(const Tensor& DZ, const Tensor& K, const Tensor& dH,
                                    const OptTensor& mask, const OptTensor& mr,
                                    const Tensor& U) {
  check_backward(DZ, {&DZ, &K, &dH}, mask, mr);
  TORCH_CHECK(!mr || mr->dim() == 2, "multirnn native scan: SimpleRNN's mask is (batch, u)");
  const Tensor Ut = U.t().contiguous();  // BLAS is twice as fast on it
  Tensor dh = at::zeros({DZ.size(1), dH.size(2)}, DZ.options());
  for_row_ranges(DZ.size(1), [&](const Rows& r) {
    AT_DISPATCH_FLOATING_TYPES(DZ.scalar_type(), "multirnn_scan::simple_backward", [&] {
      simple_backward_rows<scalar_t>(r.steps(DZ), r.steps(K), r.steps(dH), r.steps(mask),
                                     r.batch(mr), Ut, r.batch(dh));
    });
  });
  return {dh};
}

// The protocol version: multirnn_torch.native refuses a library whose version differs.
int64_t version() { return 3; }

}  // namespace

TORCH_LIBRARY(multirnn_scan, m) {
  m.def("version", &version);
  m.def("forward", &forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_backward", &gru_backward);
  m.def("simple_backward", &simple_backward);
}
