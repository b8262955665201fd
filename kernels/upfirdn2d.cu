// upfirdn2d for CUDA tensors (float32/float64/float16/bfloat16; accumulation in float or double). Same definition as
// kernels/upfirdn2d.cpp, any up/down on both axes:
//   out[n, c, oy, ox] = sum_{a, b} g[a, b] * U[oy * downy + a - pady0, ox * downx + b - padx0]
// One thread per output pixel (grid-stride loop); each thread visits only the filter taps that land on real
// (non-inserted) input pixels: along y the taps a = a0, a0 + upy, ... and along x b = b0, b0 + upx, ...
// Registered in kernels/cuda_ops.cpp as torch.ops.stylegan_v_cuda.upfirdn2d.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

__device__ __forceinline__ int64_t floordiv(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int64_t posmod(int64_t a, int64_t b) { int64_t r = a % b; return r < 0 ? r + b : r; }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g, scalar_t* __restrict__ out,
                                 int64_t planes, int64_t H, int64_t W, int64_t outH, int64_t outW, int fh, int fw,
                                 int upx, int upy, int downx, int downy, int padx0, int pady0) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t total = planes * outH * outW;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t ox = i % outW, oy = (i / outW) % outH, plane = i / (outW * outH);
        const int64_t qy = oy * downy - pady0, qx = ox * downx - padx0;  // U index of tap 0
        const int a0 = (int)posmod(-qy, upy), b0 = (int)posmod(-qx, upx);  // first taps on real pixels
        const scalar_t* xp = x + plane * H * W;
        acc_t acc = 0;
        for (int a = a0; a < fh; a += upy) {
            const int64_t iy = floordiv(qy + a, upy);
            if (iy < 0 || iy >= H) continue;
            for (int b = b0; b < fw; b += upx) {
                const int64_t ix = floordiv(qx + b, upx);
                if (ix < 0 || ix >= W) continue;
                acc += acc_t(g[a * fw + b]) * acc_t(xp[iy * W + ix]);
            }
        }
        out[i] = scalar_t(acc);
    }
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& g, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
    TORCH_CHECK(x.is_cuda() && g.device() == x.device(), "upfirdn2d (cuda kernel): x and f must be on the same CUDA device");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "upfirdn2d: x must be a contiguous [N, C, H, W] tensor");
    TORCH_CHECK(g.dim() == 2 && g.is_contiguous() && g.scalar_type() == x.scalar_type(), "upfirdn2d: f must be a contiguous 2-D tensor of x's dtype");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), fh = g.size(0), fw = g.size(1);
    TORCH_CHECK(H * upy + pady0 + pady1 >= fh && W * upx + padx0 + padx1 >= fw, "upfirdn2d: padding crops the image below the filter size");
    const int64_t outH = (H * upy + pady0 + pady1 - fh) / downy + 1, outW = (W * upx + padx0 + padx1 - fw) / downx + 1;
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor out = at::empty({N, C, outH, outW}, x.options());
    const int64_t total = out.numel();
    if (total == 0) return out;
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N * C, H, W, outH, outW, (int)fh,
            (int)fw, (int)upx, (int)upy, (int)downx, (int)downy, (int)padx0, (int)pady0);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}
