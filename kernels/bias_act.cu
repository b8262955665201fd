// Fused bias + activation + gain + clamp for CUDA tensors (float32/float64/float16/bfloat16; math in float or double).
// (only c10 CUDA headers are used: ATen/cuda/CUDAContext.h needs cuSPARSE/cuBLAS headers a bare toolkit may lack).
// Same three modes as kernels/bias_act.cpp (forward, gradient, gradient of the gradient); one thread per element,
// grid-stride loop. Registered in kernels/cuda_ops.cpp as torch.ops.stylegan_v_cuda.bias_act.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "bias_act.h"

namespace {

template <int A, int G, typename scalar_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, const scalar_t* __restrict__ ddx,
                                scalar_t* __restrict__ out, int64_t n, int64_t C, int64_t inner,
                                float alpha_f, float gain_f, float clamp_f, double alpha_d, double gain_d, double clamp_d) {
    using acc_t = at::opmath_type<scalar_t>;  // float for half/bfloat16/float, double for double
    const acc_t alpha = sizeof(acc_t) == 8 ? acc_t(alpha_d) : acc_t(alpha_f);
    const acc_t gain = sizeof(acc_t) == 8 ? acc_t(gain_d) : acc_t(gain_f);
    const acc_t clamp = sizeof(acc_t) == 8 ? acc_t(clamp_d) : acc_t(clamp_f);
    const bool clamp_on = clamp_d >= 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        acc_t bv = b ? acc_t(b[(i / inner) % C]) : acc_t(0);
        acc_t dyv = G >= 1 ? acc_t(dy[i]) : acc_t(0);
        acc_t ddxv = G == 2 ? acc_t(ddx[i]) : acc_t(0);
        out[i] = scalar_t(sgv::bias_act_elem<A, G, acc_t>(acc_t(x[i]), bv, dyv, ddxv, alpha, gain, clamp, clamp_on));
    }
}

template <int G, typename scalar_t>
void launch(int act, const scalar_t* x, const scalar_t* b, const scalar_t* dy, const scalar_t* ddx, scalar_t* out,
            int64_t n, int64_t C, int64_t inner, double alpha, double gain, double clamp) {
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535LL * 8);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
#define SGV_CASE(A)                                                                                                   \
    case A:                                                                                                           \
        bias_act_kernel<A, G, scalar_t><<<blocks, threads, 0, stream>>>(x, b, dy, ddx, out, n, C, inner, float(alpha), \
                                                                       float(gain), float(clamp), alpha, gain, clamp); \
        break;
    switch (act) {
        SGV_FOR_EACH_ACT(SGV_CASE)
        default: TORCH_CHECK(false, "bias_act: unknown activation index ", act);
    }
#undef SGV_CASE
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, const at::Tensor& ddx,
                         int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda() && x.is_contiguous(), "bias_act (cuda kernel): x must be a contiguous CUDA tensor");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.numel() == x.size(dim) && b.is_contiguous() && b.device() == x.device() &&
                                   b.scalar_type() == x.scalar_type()), "bias_act: b must be empty or [x.shape[dim]] of x's dtype and device");
    if (grad >= 1) TORCH_CHECK(dy.sizes() == x.sizes() && dy.is_contiguous() && dy.scalar_type() == x.scalar_type() && dy.device() == x.device(), "bias_act: dy must match x");
    if (grad == 2) TORCH_CHECK(ddx.sizes() == x.sizes() && ddx.is_contiguous() && ddx.scalar_type() == x.scalar_type() && ddx.device() == x.device(), "bias_act: ddx must match x");
    const c10::cuda::CUDAGuard guard(x.device());
    int64_t inner = 1;
    for (int64_t i = dim + 1; i < x.dim(); i++) inner *= x.size(i);
    at::Tensor out = at::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0) return out;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        const scalar_t* bp = b.numel() ? b.data_ptr<scalar_t>() : nullptr;
        const scalar_t* dyp = grad >= 1 ? dy.data_ptr<scalar_t>() : nullptr;
        const scalar_t* ddxp = grad == 2 ? ddx.data_ptr<scalar_t>() : nullptr;
        const scalar_t* xp = x.data_ptr<scalar_t>();
        scalar_t* op = out.data_ptr<scalar_t>();
        if (grad == 0) launch<0>(int(act), xp, bp, dyp, ddxp, op, n, x.size(dim), inner, alpha, gain, clamp);
        else if (grad == 1) launch<1>(int(act), xp, bp, dyp, ddxp, op, n, x.size(dim), inner, alpha, gain, clamp);
        else launch<2>(int(act), xp, bp, dyp, ddxp, op, n, x.size(dim), inner, alpha, gain, clamp);
    });
    return out;
}
