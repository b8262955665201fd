// upfirdn2d for CPU tensors (float32/float64): upsample by zero insertion, pad, FIR filter, downsample -- computed
// directly, touching only the filter taps that land on real (non-inserted) pixels, and only the kept outputs.
// Registered as torch.ops.stylegan_v_cpu.upfirdn2d; the Python side (stylegan_v/ops/upfirdn2d.py) owns autograd.
//
//   out[n, c, oy, ox] = sum_{a, b} g[a, b] * U[oy * downy + a - pady0, ox * downx + b - padx0]
//   U[i, j] = x[n, c, i / upy, j / upx] if upy | i and upx | j (and inside the image), else 0
//
// `g` is the filter as applied by correlation (the Python side flips it for a true convolution and folds in the gain).
// On each axis either up == 1 or down == 1 (the Python side subsamples the output otherwise).
//
// Polyphase layout, per plane:
//  * the input, zero-padded, is split into downy x downx decimated sub-images (sub[py][px][k][l] =
//    padded[k * downy + py][l * downx + px]), all with the same row stride Kx;
//  * the outputs are split into upy x upx phases (oy = my * upy + ry, ox = mx * upx + rx); every output of one phase
//    uses the same filter taps, and each tap reads one sub-image at a fixed offset. Computing a phase on a grid with
//    the sub-images' row stride makes every tap ONE long contiguous multiply-add over the whole phase
//    (acc[j] += g * src[j], j = my * Kx + mx), which the compiler vectorises, four taps per pass over acc; the
//    columns mx >= Mx of that grid are scratch and are not copied out.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <algorithm>
#include <vector>

namespace {

inline int64_t floordiv(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
inline int64_t posmod(int64_t a, int64_t b) { int64_t r = a % b; return r < 0 ? r + b : r; }

struct Tap { int64_t f, phase, off; };  // filter index, decimated source phase, offset in that phase

struct Axis {
    int64_t n, out, up, down, L, K;      // input length, output length, zeros in front, decimated length
    std::vector<int64_t> M;              // outputs per output phase (up of them)
    std::vector<std::vector<Tap>> taps;  // per output phase
};

// One axis of the op (up == 1 or down == 1): which taps each output phase uses and where they read.
Axis make_axis(int64_t n, int64_t fn, int64_t up, int64_t down, int64_t p0, int64_t p1) {
    Axis ax{n, (n * up + p0 + p1 - fn) / down + 1, up, down, 0, 0};
    ax.M.resize(up); ax.taps.resize(up);
    std::vector<std::vector<std::pair<int64_t, int64_t>>> rel(up);  // (filter index, input index for m = 0)
    int64_t dmin = 0, dmax = 0; bool any = false;
    for (int64_t r = 0; r < up; r++) {
        ax.M[r] = r < ax.out ? (ax.out - r + up - 1) / up : 0;
        if (ax.M[r] == 0) continue;
        for (int64_t f = 0; f < fn; f++) {
            int64_t q = r * down + f - p0;            // U index for m = 0
            if (posmod(q, up) != 0) continue;         // lands on an inserted zero
            int64_t d = floordiv(q, up);              // input index = m * down + d
            int64_t last = (ax.M[r] - 1) * down + d;  // largest input index read
            if (last < 0 || d >= n) continue;         // only ever reads zero padding
            rel[r].push_back({f, d});
            dmin = any ? std::min(dmin, d) : d; dmax = any ? std::max(dmax, last) : last; any = true;
        }
    }
    ax.L = std::max<int64_t>(0, -dmin);
    ax.K = (ax.L + std::max<int64_t>(n, dmax + 1) + down - 1) / down;
    ax.K = std::max(ax.K, ax.M[0]);  // a phase's outputs must fit in one row of stride K (phases may have no taps)
    for (int64_t r = 0; r < up; r++)
        for (auto& t : rel[r]) { int64_t e = t.second + ax.L; ax.taps[r].push_back({t.first, e % down, e / down}); }
    return ax;
}

// acc[j] (=|+=) sum_k g_k * p_k[j] for K <= 4 taps at once: one load/store of acc per 4 taps instead of per tap.
template <int K, bool ASSIGN, typename T>
inline void mac(T* __restrict acc, const T* g, const T* const* p, int64_t len) {
    const T g0 = g[0], g1 = K > 1 ? g[1] : T(0), g2 = K > 2 ? g[2] : T(0), g3 = K > 3 ? g[3] : T(0);
    const T* __restrict p0 = p[0];
    const T* __restrict p1 = K > 1 ? p[1] : p[0];
    const T* __restrict p2 = K > 2 ? p[2] : p[0];
    const T* __restrict p3 = K > 3 ? p[3] : p[0];
    for (int64_t j = 0; j < len; j++) {
        T v = g0 * p0[j];
        if constexpr (K > 1) v += g1 * p1[j];
        if constexpr (K > 2) v += g2 * p2[j];
        if constexpr (K > 3) v += g3 * p3[j];
        if constexpr (ASSIGN) acc[j] = v; else acc[j] += v;
    }
}

template <typename T>
void mac_all(T* acc, const std::vector<T>& g, const std::vector<const T*>& p, int64_t len) {
    const size_t n = g.size();
    if (n == 0) { std::fill(acc, acc + len, T(0)); return; }
    for (size_t i = 0; i < n; i += 4) {
        const size_t k = std::min<size_t>(4, n - i);
        const bool first = i == 0;
        switch (k) {
            case 1: first ? mac<1, true>(acc, &g[i], &p[i], len) : mac<1, false>(acc, &g[i], &p[i], len); break;
            case 2: first ? mac<2, true>(acc, &g[i], &p[i], len) : mac<2, false>(acc, &g[i], &p[i], len); break;
            case 3: first ? mac<3, true>(acc, &g[i], &p[i], len) : mac<3, false>(acc, &g[i], &p[i], len); break;
            default: first ? mac<4, true>(acc, &g[i], &p[i], len) : mac<4, false>(acc, &g[i], &p[i], len); break;
        }
    }
}

template <typename T>
void run_plane(const Axis& ay, const Axis& ax, const T* __restrict x, const T* __restrict g, int64_t fw,
               T* __restrict out, T* __restrict buf, T* __restrict acc, std::vector<T>& tg, std::vector<const T*>& tp) {
    const int64_t Kx = ax.K, sub = (ay.K + 1) * Kx;  // one spare zero row per sub-image absorbs scratch-column reads
    // Scatter the plane into the decimated sub-images (their zero margins were set once and are never written).
    for (int64_t iy = 0; iy < ay.n; iy++) {
        const int64_t ey = iy + ay.L;
        T* row = buf + (ey % ay.down) * ax.down * sub + (ey / ay.down) * Kx;
        const T* src = x + iy * ax.n;
        if (ax.down == 1) { std::copy(src, src + ax.n, row + ax.L); continue; }
        for (int64_t px = 0; px < ax.down; px++) {
            const int64_t k0 = (ax.L - px + ax.down - 1) / ax.down;  // >= 0 since px < down
            const int64_t k1 = (ax.L + ax.n - 1 - px) >= 0 ? (ax.L + ax.n - 1 - px) / ax.down + 1 : 0;
            T* __restrict d = row + px * sub;
            const T* __restrict s = src + px - ax.L;
            for (int64_t k = k0; k < k1; k++) d[k] = s[k * ax.down];
        }
    }
    const int64_t outW = ax.out;
    for (int64_t ry = 0; ry < ay.up; ry++) {
        const int64_t My = ay.M[ry], len = My * Kx;
        if (My == 0) continue;
        for (int64_t rx = 0; rx < ax.up; rx++) {
            const int64_t Mx = ax.M[rx];
            if (Mx == 0) continue;
            tg.clear(); tp.clear();  // every (y tap, x tap) of this phase: its weight and where it reads
            for (const Tap& ty : ay.taps[ry]) {
                const T* sy = buf + ty.phase * ax.down * sub + ty.off * Kx;
                for (const Tap& tx : ax.taps[rx]) { tg.push_back(g[ty.f * fw + tx.f]); tp.push_back(sy + tx.phase * sub + tx.off); }
            }
            mac_all(acc, tg, tp, len);
            for (int64_t my = 0; my < My; my++) {
                T* o = out + (my * ay.up + ry) * outW;
                const T* a = acc + my * Kx;
                if (ax.up == 1) std::copy(a, a + Mx, o);
                else for (int64_t mx = 0; mx < Mx; mx++) o[mx * ax.up + rx] = a[mx];
            }
        }
    }
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& g, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
    TORCH_CHECK(x.device().is_cpu() && g.device().is_cpu(), "upfirdn2d (cpu kernel): x and f must be CPU tensors");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "upfirdn2d: x must be a contiguous [N, C, H, W] tensor");
    TORCH_CHECK(g.dim() == 2 && g.is_contiguous() && g.scalar_type() == x.scalar_type(), "upfirdn2d: f must be a contiguous 2-D tensor of x's dtype");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "upfirdn2d: x must be float32 or float64");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
    TORCH_CHECK((upx == 1 || downx == 1) && (upy == 1 || downy == 1), "upfirdn2d (cpu kernel): up > 1 together with down > 1 on one axis is not supported");
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), fh = g.size(0), fw = g.size(1);
    TORCH_CHECK(H * upy + pady0 + pady1 >= fh && W * upx + padx0 + padx1 >= fw, "upfirdn2d: padding crops the image below the filter size");
    const Axis ay = make_axis(H, fh, upy, downy, pady0, pady1), ax = make_axis(W, fw, upx, downx, padx0, padx1);
    at::Tensor out = at::empty({N, C, ay.out, ax.out}, x.options());
    if (out.numel() == 0) return out;
    const int64_t planes = N * C, sub = (ay.K + 1) * ax.K, acc_len = ay.M[0] * ax.K;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, ay.out * ax.out * fh * fw / (upx * upy)));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&] {
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* gp = g.data_ptr<scalar_t>();
        scalar_t* op = out.data_ptr<scalar_t>();
        at::parallel_for(0, planes, grain, [&](int64_t i0, int64_t i1) {
            std::vector<scalar_t> buf(ay.down * ax.down * sub, scalar_t(0)), acc(acc_len), tg;
            std::vector<const scalar_t*> tp;
            for (int64_t i = i0; i < i1; i++)
                run_plane(ay, ax, xp + i * H * W, gp, fw, op + i * ay.out * ax.out, buf.data(), acc.data(), tg, tp);
        });
    });
    return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_v_cpu, m) {
    m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, int pady1) -> Tensor");
}
TORCH_LIBRARY_IMPL(stylegan_v_cpu, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }
