// Fused bias + activation + gain + clamp for CPU tensors (float32/float64), OpenMP-parallel, vectorisable loops.
// Registered as torch.ops.stylegan_v_cpu.bias_act; the Python side (stylegan_v/ops/bias_act.py) owns autograd.
//
// With z = x + b (b broadcast along `dim`), v = gain * f(z) and the clamp mask m = (clamp < 0 || |v| <= clamp):
//   grad == 0:  out = clamp(v, -clamp, clamp)            (forward)
//   grad == 1:  out = dy * gain * f'(z) * m               (d/dx)
//   grad == 2:  out = ddx * dy * gain * f''(z) * m        (d/dx of the grad == 1 output, for double backward)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bias_act.h"

namespace {

using namespace sgv;

// One contiguous run of n elements sharing the bias value `bias` (or, when bstride == 1, a run over channels).
template <int A, int G, bool CLAMP, typename T>
inline void run(const T* __restrict x, const T* __restrict b, int64_t bstride, const T* __restrict dy,
                const T* __restrict ddx, T* __restrict out, int64_t n, T alpha, T gain, T clamp) {
    for (int64_t i = 0; i < n; i++)
        out[i] = bias_act_elem<A, G>(x[i], b[i * bstride], G >= 1 ? dy[i] : T(0), G == 2 ? ddx[i] : T(0), alpha, gain, clamp, CLAMP);
}

template <int A, int G, bool CLAMP, typename T>
void launch(const T* x, const T* b, const T* dy, const T* ddx, T* out, int64_t outer, int64_t C, int64_t inner,
            T alpha, T gain, T clamp) {
    static const T zero = T(0);
    if (b == nullptr) {  // no bias: one flat array, split into chunks
        at::parallel_for(0, outer * C * inner, 16384, [&](int64_t i0, int64_t i1) {
            run<A, G, CLAMP>(x + i0, &zero, 0, dy ? dy + i0 : nullptr, ddx ? ddx + i0 : nullptr, out + i0, i1 - i0, alpha, gain, clamp);
        });
        return;
    }
    if (inner == 1) {  // bias along the last dim: vectorise across channels
        at::parallel_for(0, outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; r++) {
                int64_t o = r * C;
                run<A, G, CLAMP>(x + o, b, 1, dy ? dy + o : nullptr, ddx ? ddx + o : nullptr, out + o, C, alpha, gain, clamp);
            }
        });
        return;
    }
    int64_t rows = outer * C;
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++) {
            int64_t o = r * inner;
            const T* bp = b ? b + (r % C) : &zero;
            run<A, G, CLAMP>(x + o, bp, 0, dy ? dy + o : nullptr, ddx ? ddx + o : nullptr, out + o, inner, alpha, gain, clamp);
        }
    });
}

template <int G, typename T>
void dispatch_act(int act, bool clamp_on, const T* x, const T* b, const T* dy, const T* ddx, T* out,
                  int64_t outer, int64_t C, int64_t inner, T alpha, T gain, T clamp) {
#define SGV_CASE(A)                                                                                                  \
    case A:                                                                                                          \
        if (clamp_on) launch<A, G, true>(x, b, dy, ddx, out, outer, C, inner, alpha, gain, clamp);                   \
        else launch<A, G, false>(x, b, dy, ddx, out, outer, C, inner, alpha, gain, clamp);                           \
        break;
    switch (act) {
        SGV_FOR_EACH_ACT(SGV_CASE)
        default: TORCH_CHECK(false, "bias_act: unknown activation index ", act);
    }
#undef SGV_CASE
}

at::Tensor bias_act_cpu(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, const at::Tensor& ddx,
                        int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.device().is_cpu(), "bias_act (cpu kernel): x must be a CPU tensor");
    TORCH_CHECK(x.is_contiguous(), "bias_act: x must be contiguous");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "bias_act: x must be float32 or float64");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.numel() == x.size(dim) && b.is_contiguous() &&
                                   b.scalar_type() == x.scalar_type()), "bias_act: b must be empty or [x.shape[dim]] of x's dtype");
    if (grad >= 1) TORCH_CHECK(dy.sizes() == x.sizes() && dy.is_contiguous() && dy.scalar_type() == x.scalar_type(), "bias_act: dy must match x");
    if (grad == 2) TORCH_CHECK(ddx.sizes() == x.sizes() && ddx.is_contiguous() && ddx.scalar_type() == x.scalar_type(), "bias_act: ddx must match x");
    int64_t outer = 1, inner = 1, C = x.size(dim);
    for (int64_t i = 0; i < dim; i++) outer *= x.size(i);
    for (int64_t i = dim + 1; i < x.dim(); i++) inner *= x.size(i);
    at::Tensor out = at::empty_like(x);
    if (x.numel() == 0) return out;
    bool clamp_on = clamp >= 0;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
        const scalar_t* bp = b.numel() ? b.data_ptr<scalar_t>() : nullptr;
        const scalar_t* dyp = grad >= 1 ? dy.data_ptr<scalar_t>() : nullptr;
        const scalar_t* ddxp = grad == 2 ? ddx.data_ptr<scalar_t>() : nullptr;
        auto args = std::make_tuple(x.data_ptr<scalar_t>(), bp, dyp, ddxp, out.data_ptr<scalar_t>());
        auto a = scalar_t(alpha), g = scalar_t(gain), c = scalar_t(clamp);
        if (grad == 0) dispatch_act<0>(int(act), clamp_on, std::get<0>(args), bp, dyp, ddxp, std::get<4>(args), outer, C, inner, a, g, c);
        else if (grad == 1) dispatch_act<1>(int(act), clamp_on, std::get<0>(args), bp, dyp, ddxp, std::get<4>(args), outer, C, inner, a, g, c);
        else dispatch_act<2>(int(act), clamp_on, std::get<0>(args), bp, dyp, ddxp, std::get<4>(args), outer, C, inner, a, g, c);
    });
    return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_v_cpu, m) {
    m.def("bias_act(Tensor x, Tensor b, Tensor dy, Tensor ddx, int grad, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
}
TORCH_LIBRARY_IMPL(stylegan_v_cpu, CPU, m) { m.impl("bias_act", &bias_act_cpu); }
