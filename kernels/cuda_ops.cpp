// Registers the CUDA kernels of kernels/bias_act.cu and kernels/upfirdn2d.cu as torch.ops.stylegan_v_cuda.*; the
// schemas are the same as the CPU ops' (kernels/bias_act.cpp, kernels/upfirdn2d.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, const at::Tensor& ddx,
                         int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp);
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& g, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1);

TORCH_LIBRARY(stylegan_v_cuda, m) {
    m.def("bias_act(Tensor x, Tensor b, Tensor dy, Tensor ddx, int grad, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
    m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, int pady1) -> Tensor");
}
TORCH_LIBRARY_IMPL(stylegan_v_cuda, CUDA, m) {
    m.impl("bias_act", &bias_act_cuda);
    m.impl("upfirdn2d", &upfirdn2d_cuda);
}
