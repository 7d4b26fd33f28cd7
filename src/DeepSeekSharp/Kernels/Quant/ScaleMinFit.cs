using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>How ggml quantises a super-block of 256 weights into eight sub-blocks of 32 with a 6-bit scale and
/// a 6-bit minimum each (Q4_K, Q5_K): the bytes quantize_row_q4_K_ref and quantize_row_q5_K_ref write, which are what
/// llama-quantize writes without an importance matrix. Every float step is ggml's, in its order (ggml-base is built
/// without FMA contraction), so the codes, scales and fp16 words come out bit for bit.</summary>
internal static class ScaleMinFit
{
    /// <summary>Fits one super-block <paramref name="v"/> (256 weights): per sub-block of 32 the affine fit of
    /// <see cref="Fit8"/> (weights rms + |x|); the eight scales and minimums quantised to 6 bits against the largest of
    /// each (into <paramref name="scales"/>, the 12-byte packing, zeroed first) and fp16 d = max scale / 63,
    /// dmin = max minimum / 63; then each sub-block's codes (0..<paramref name="nmax"/>, into <paramref name="codes"/>)
    /// recomputed as nearest((x + dmin·m) / (d·sc)), kept from the fit where d·sc is zero.</summary>
    public static void SuperBlock(ReadOnlySpan<float> v, int nmax, float rmin, int nstep, Span<byte> scales, Span<byte> codes, out ushort d, out ushort dmin)
    {
        Span<float> sc = stackalloc float[8], mins = stackalloc float[8], weights = stackalloc float[256];
        for (int j = 0; j < 8; j++)
        {
            ReadOnlySpan<float> x = v.Slice(32 * j, 32);
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) sumX2 += x[l] * x[l];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) weights[32 * j + l] = avX + MathF.Abs(x[l]);
        }
        Fit8(v, weights, nmax, rmin, 0.1f, nstep, sc, mins, codes);
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            if (sc[j] > maxScale) maxScale = sc[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0f, invMin = maxMin > 0 ? 63f / maxMin : 0f;
        scales.Clear();
        for (int j = 0; j < 8; j++)
        {
            // uint8_t as ggml keeps them (a negative fit wraps before the clamp, as there).
            int ls = Math.Min(63, (int)(byte)KQuants.NearestInt(invScale * sc[j])), lm = Math.Min(63, (int)(byte)KQuants.NearestInt(invMin * mins[j]));
            KQuants.SetScaleMin6(scales, j, ls, lm);
        }
        d = HalfTable.FromFloat(maxScale / 63f);
        dmin = HalfTable.FromFloat(maxMin / 63f);
        for (int j = 0; j < 8; j++)
        {
            (int ls, int lm) = KQuants.ScaleMin6(scales, j);
            float s = HalfTable.Values[d] * ls;
            if (s == 0) continue;
            float m = HalfTable.Values[dmin] * lm;
            for (int l = 0; l < 32; l++) codes[32 * j + l] = (byte)Math.Clamp(KQuants.NearestInt((v[32 * j + l] + m) / s), 0, nmax);
        }
    }

    /// <summary>ggml's make_qkx2_quants (<see cref="FitScalar"/>, the specification) for the eight sub-blocks of
    /// <paramref name="n"/> (32 for Q4_K and Q5_K, 16 with <paramref name="absolute"/> errors for Q2_K) in
    /// <paramref name="x"/> at once, sub-block j in lane j of a vector: each lane runs the scalar loop's steps in its
    /// order over its own values (transposed first), so every sub-block gets the scalar loop's scale, minimum and
    /// codes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Fit8(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int nmax, float rmin, float rdelta, int nstep,
        Span<float> scales, Span<float> mins, Span<byte> codes, int n = 32, bool absolute = false)
    {
        if (n is < 1 or > 32) throw new ArgumentOutOfRangeException(nameof(n), n, "1 to 32 values a sub-block");
        if (x.Length < 8 * n || w.Length < 8 * n || codes.Length < 8 * n || scales.Length < 8 || mins.Length < 8) ThrowHelper.TooShort(nameof(x), 8 * n, x.Length);
        Span<Vector256<float>> xt = stackalloc Vector256<float>[n], wt = stackalloc Vector256<float>[n], lt = stackalloc Vector256<float>[n];
        Span<float> lanes = stackalloc float[8];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < 8; j++) lanes[j] = x[n * j + i];
            xt[i] = Vector256.Create((ReadOnlySpan<float>)lanes);
            for (int j = 0; j < 8; j++) lanes[j] = w[n * j + i];
            wt[i] = Vector256.Create((ReadOnlySpan<float>)lanes);
        }
        Vector256<float> zero = Vector256<float>.Zero, top = Vector256.Create((float)nmax);
        Vector256<float> lo = xt[0], hi = xt[0], sumW = wt[0], sumX = wt[0] * xt[0];
        for (int i = 1; i < n; i++)
        {
            lo = Vector256.ConditionalSelect(Vector256.LessThan(xt[i], lo), xt[i], lo);
            hi = Vector256.ConditionalSelect(Vector256.GreaterThan(xt[i], hi), xt[i], hi);
            sumW += wt[i];
            sumX += wt[i] * xt[i];
        }
        lo = Vector256.ConditionalSelect(Vector256.GreaterThan(lo, zero), zero, lo);
        Vector256<float> flat = Vector256.Equals(hi, lo); // such lanes end with codes 0, scale 0 (their numbers below are NaN)
        Vector256<float> iscale = top / (hi - lo), scale = Vector256<float>.One / iscale;
        for (int i = 0; i < n; i++) lt[i] = Codes(iscale, xt[i] - lo, top);
        Vector256<float> best = Error(scale, lo, xt, wt, lt, absolute);
        Vector256<float> bestIscale = iscale, bestLo = lo; // whose codes the fit keeps
        for (int k = 0; k <= nstep; k++)
        {
            iscale = Vector256.Create(rmin + rdelta * k + nmax) / (hi - lo);
            Vector256<float> sumL = zero, sumL2 = zero, sumXL = zero;
            for (int i = 0; i < n; i++)
            {
                Vector256<float> l = lt[i] = Codes(iscale, xt[i] - lo, top), wl = wt[i] * l;
                sumL += wl;
                sumL2 += wl * l;
                sumXL += wl * xt[i];
            }
            Vector256<float> det = sumW * sumL2 - sumL * sumL;
            Vector256<float> s = (sumW * sumXL - sumX * sumL) / det, o = (sumL2 * sumX - sumL * sumXL) / det;
            Vector256<float> positive = Vector256.GreaterThan(o, zero);
            s = Vector256.ConditionalSelect(positive, sumXL / sumL2, s);
            o = Vector256.ConditionalSelect(positive, zero, o);
            Vector256<float> error = Error(s, o, xt, wt, lt, absolute);
            Vector256<float> better = Vector256.GreaterThan(det, zero) & Vector256.LessThan(error, best);
            best = Vector256.ConditionalSelect(better, error, best);
            scale = Vector256.ConditionalSelect(better, s, scale);
            bestIscale = Vector256.ConditionalSelect(better, iscale, bestIscale);
            bestLo = Vector256.ConditionalSelect(better, lo, bestLo);
            lo = Vector256.ConditionalSelect(better, o, lo); // ggml's loop goes on from the new minimum
        }
        Vector256.ConditionalSelect(flat, zero, scale).CopyTo(scales);
        (-lo).CopyTo(mins);
        for (int i = 0; i < n; i++)
        {
            Vector256<int> l = Vector256.ConvertToInt32(Vector256.ConditionalSelect(flat, zero, Codes(bestIscale, xt[i] - bestLo, top)));
            for (int j = 0; j < 8; j++) codes[n * j + i] = (byte)l[j];
        }
    }

    /// <summary>Σ w·(s·l + o − x)² (or, <paramref name="absolute"/>, Σ w·|s·l + o − x|) over the sub-block's values,
    /// in order, each lane its own sub-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Error(Vector256<float> s, Vector256<float> o, ReadOnlySpan<Vector256<float>> xt,
        ReadOnlySpan<Vector256<float>> wt, ReadOnlySpan<Vector256<float>> lt, bool absolute)
    {
        Vector256<float> error = Vector256<float>.Zero;
        for (int i = 0; i < xt.Length; i++)
        {
            Vector256<float> diff = s * lt[i] + o - xt[i];
            error += wt[i] * (absolute ? Vector256.Abs(diff) : diff * diff);
        }
        return error;
    }

    /// <summary>nearest(iscale · shifted) clamped to 0..top. The clamps are the CPU's own min and max (the codes are
    /// whole numbers and never NaN outside a flat lane, where the IEEE forms' extra steps would buy nothing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Codes(Vector256<float> iscale, Vector256<float> shifted, Vector256<float> top) =>
        Vector256.MinNative(Vector256.MaxNative(Vector256.Round(iscale * shifted), Vector256<float>.Zero), top);

    /// <summary>ggml's make_qkx2_quants with squared errors as ggml writes it, one sub-block: x ≈ scale·q − min with q in
    /// 0..nmax and min ≥ 0. The fit putting [lo, hi] = [min(x, 0), max x] on 0..nmax first; then for k = 0..nstep,
    /// iscale = (rmin + rdelta·k + nmax) / (hi − lo), the codes nearest(iscale·(x − lo)), (scale, offset) by weighted
    /// least squares (offset clamped to ≤ 0) and the weighted squared error; a candidate strictly better than the best
    /// replaces it, and its offset becomes lo for the candidates after it (ggml's loop reuses <c>min</c>). With
    /// <paramref name="absolute"/> the errors are weighted absolute ones (its use_mad, for Q2_K).</summary>
    /// <returns>the scale; <paramref name="min"/> gets −offset</returns>
    internal static float FitScalar(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int nmax, float rmin, float rdelta, int nstep, Span<byte> codes, out float min,
        bool absolute = false)
    {
        float hi = x[0], lo = x[0], sumW = w[0], sumX = sumW * x[0];
        for (int i = 1; i < x.Length; i++)
        {
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
            sumW += w[i];
            sumX += w[i] * x[i];
        }
        if (lo > 0) lo = 0;
        if (hi == lo)
        {
            codes[..x.Length].Clear();
            min = -lo;
            return 0;
        }
        float first = nmax / (hi - lo), scale = 1 / first, best = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Math.Clamp(KQuants.NearestInt(first * (x[i] - lo)), 0, nmax);
            codes[i] = (byte)l;
            float diff = scale * l + lo - x[i];
            best += w[i] * (absolute ? MathF.Abs(diff) : diff * diff);
        }
        Span<byte> aux = stackalloc byte[x.Length];
        for (int k = 0; k <= nstep; k++)
        {
            float iscale = (rmin + rdelta * k + nmax) / (hi - lo), sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < x.Length; i++)
            {
                int l = Math.Clamp(KQuants.NearestInt(iscale * (x[i] - lo)), 0, nmax);
                aux[i] = (byte)l;
                sumL += w[i] * l;
                sumL2 += w[i] * l * l;
                sumXL += w[i] * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (!(det > 0)) continue;
            float s = (sumW * sumXL - sumX * sumL) / det, o = (sumL2 * sumX - sumL * sumXL) / det;
            if (o > 0) (o, s) = (0, sumXL / sumL2);
            float error = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float diff = s * aux[i] + o - x[i];
                error += w[i] * (absolute ? MathF.Abs(diff) : diff * diff);
            }
            if (error < best)
            {
                aux.CopyTo(codes);
                (best, scale, lo) = (error, s, o);
            }
        }
        min = -lo;
        return scale;
    }
}
