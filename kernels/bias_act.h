// Activation functions and their first and second derivatives, shared by kernels/bias_act.cpp (CPU) and
// kernels/bias_act.cu (CUDA). Indices match `native_idx` in stylegan_v/ops/bias_act.py's activation table.
#pragma once
#include <cmath>

#ifdef __CUDACC__
#define SGV_HD __host__ __device__ __forceinline__
#else
#define SGV_HD inline
#endif

namespace sgv {

enum Act { LINEAR = 1, RELU, LRELU, TANH, SIGMOID, ELU, SELU, SOFTPLUS, SWISH };
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;  // as torch.nn.functional.softplus

SGV_HD float exp_(float x) { return expf(x); }
SGV_HD double exp_(double x) { return exp(x); }
SGV_HD float expm1_(float x) { return expm1f(x); }
SGV_HD double expm1_(double x) { return expm1(x); }
SGV_HD float log1p_(float x) { return log1pf(x); }
SGV_HD double log1p_(double x) { return log1p(x); }
SGV_HD float tanh_(float x) { return tanhf(x); }
SGV_HD double tanh_(double x) { return tanh(x); }
template <typename T> SGV_HD T sigm(T z) { return T(1) / (T(1) + exp_(-z)); }

// f(z)
template <int A, typename T> SGV_HD T act_f(T z, T alpha) {
    if constexpr (A == LINEAR) return z;
    else if constexpr (A == RELU) return z > T(0) ? z : T(0);
    else if constexpr (A == LRELU) return z > T(0) ? z : z * alpha;
    else if constexpr (A == TANH) return tanh_(z);
    else if constexpr (A == SIGMOID) return sigm(z);
    else if constexpr (A == ELU) return z > T(0) ? z : expm1_(z);
    else if constexpr (A == SELU) return z > T(0) ? T(kSeluScale) * z : T(kSeluScale * kSeluAlpha) * expm1_(z);
    else if constexpr (A == SOFTPLUS) return z > T(kSoftplusThreshold) ? z : log1p_(exp_(z));
    else return z * sigm(z);  // SWISH
}

// f'(z), with the same choices at the kinks as torch's autograd (relu'(0) = 0, lrelu'(0) = alpha)
template <int A, typename T> SGV_HD T act_d1(T z, T alpha) {
    if constexpr (A == LINEAR) return T(1);
    else if constexpr (A == RELU) return z > T(0) ? T(1) : T(0);
    else if constexpr (A == LRELU) return z > T(0) ? T(1) : alpha;
    else if constexpr (A == TANH) { T t = tanh_(z); return T(1) - t * t; }
    else if constexpr (A == SIGMOID) { T s = sigm(z); return s * (T(1) - s); }
    else if constexpr (A == ELU) return z > T(0) ? T(1) : exp_(z);
    else if constexpr (A == SELU) return z > T(0) ? T(kSeluScale) : T(kSeluScale * kSeluAlpha) * exp_(z);
    else if constexpr (A == SOFTPLUS) return z > T(kSoftplusThreshold) ? T(1) : sigm(z);
    else { T s = sigm(z); return s * (T(1) + z * (T(1) - s)); }  // SWISH
}

// f''(z)
template <int A, typename T> SGV_HD T act_d2(T z, T alpha) {
    if constexpr (A == LINEAR || A == RELU || A == LRELU) return T(0);
    else if constexpr (A == TANH) { T t = tanh_(z); return T(-2) * t * (T(1) - t * t); }
    else if constexpr (A == SIGMOID) { T s = sigm(z); return s * (T(1) - s) * (T(1) - T(2) * s); }
    else if constexpr (A == ELU) return z > T(0) ? T(0) : exp_(z);
    else if constexpr (A == SELU) return z > T(0) ? T(0) : T(kSeluScale * kSeluAlpha) * exp_(z);
    else if constexpr (A == SOFTPLUS) { if (z > T(kSoftplusThreshold)) return T(0); T s = sigm(z); return s * (T(1) - s); }
    else { T s = sigm(z); return s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s)); }  // SWISH
}

// One element: G == 0 forward, G == 1 gradient, G == 2 gradient of the gradient (see bias_act.cpp).
template <int A, int G, typename T>
SGV_HD T bias_act_elem(T x, T b, T dy, T ddx, T alpha, T gain, T clamp, bool clamp_on) {
    T z = x + b;
    if constexpr (G == 0) {
        T r = gain * act_f<A>(z, alpha);
        if (clamp_on) r = r < -clamp ? -clamp : (r > clamp ? clamp : r);
        return r;
    } else {
        T r = dy * gain * ((G == 1) ? act_d1<A>(z, alpha) : act_d2<A>(z, alpha));
        if constexpr (G == 2) r *= ddx;
        if (clamp_on) { T v = gain * act_f<A>(z, alpha); r = (v >= -clamp && v <= clamp) ? r : T(0); }
        return r;
    }
}

}  // namespace sgv

// Calls MACRO(A) for every activation index, e.g. to build a switch over them.
#define SGV_FOR_EACH_ACT(MACRO) \
    MACRO(sgv::LINEAR) MACRO(sgv::RELU) MACRO(sgv::LRELU) MACRO(sgv::TANH) MACRO(sgv::SIGMOID) \
    MACRO(sgv::ELU) MACRO(sgv::SELU) MACRO(sgv::SOFTPLUS) MACRO(sgv::SWISH)
