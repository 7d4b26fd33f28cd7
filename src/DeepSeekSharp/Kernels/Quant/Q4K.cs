using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>GGUF Q4_K: super-blocks of 256 weights (144 bytes): fp16 d and dmin, twelve bytes packing eight 6-bit
/// scales and eight 6-bit minimums (one per sub-block of 32), and 128 bytes of 4-bit codes. Within each group of
/// 64 weights, byte l holds weight l in its low nibble and weight 32 + l in its high nibble.
/// w = d · sc_j · q − dmin · m_j.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ4K
{
    public const int Size = 256, Bytes = 144;
    public ushort D, DMin;
    public Scales Sc;
    public Codes Qs;

    [InlineArray(12)]
    public struct Scales { private byte _e; }

    [InlineArray(128)]
    public struct Codes { private byte _e; }
}

public static class Q4K
{
    /// <summary>Scale and minimum code of sub-block j (ggml's get_scale_min_k4).</summary>
    internal static (int Scale, int Min) ScaleMin(ref BlockQ4K b, int j) => j < 4
        ? (b.Sc[j] & 63, b.Sc[j + 4] & 63)
        : ((b.Sc[j + 4] & 0xF) | ((b.Sc[j - 4] >> 6) << 4), (b.Sc[j + 4] >> 4) | ((b.Sc[j] >> 6) << 4));

    public static void DequantizeRow(ReadOnlySpan<BlockQ4K> src, Span<float> dst)
    {
        for (int b = 0; b < src.Length; b++)
        {
            BlockQ4K blk = src[b];
            float d = HalfTable.Values[blk.D], dmin = HalfTable.Values[blk.DMin];
            for (int j = 0; j < 8; j++)
            {
                var (sc, m) = ScaleMin(ref blk, j);
                int group = j / 2, shift = (j % 2) * 4;
                for (int l = 0; l < 32; l++)
                    dst[b * 256 + j * 32 + l] = d * sc * ((blk.Qs[group * 32 + l] >> shift) & 0xF) - dmin * m;
            }
        }
    }

    /// <summary>Quantises one row (length a multiple of 256). Per sub-block of 32, an affine fit x ≈ s·q − m
    /// (q in 0..15, m ≥ 0) chosen as ggml's make_qkx2_quants does: try 21 scales around (max − min)/15, fit s and m
    /// by weighted least squares for each (weights |x| + rms), keep the smallest weighted error. Then the sixteen s
    /// and m are quantised to 6 bits against the super-block's d and dmin, and the codes are recomputed with them.</summary>
    public static void QuantizeRow(ReadOnlySpan<float> x, Span<BlockQ4K> dst)
    {
        if (x.Length != dst.Length * 256) ThrowHelper.LengthMismatch(nameof(dst), x.Length / 256, dst.Length);
        Span<float> scales = stackalloc float[8], mins = stackalloc float[8], weights = stackalloc float[32];
        Span<byte> codes = stackalloc byte[32], trial = stackalloc byte[32];
        for (int b = 0; b < dst.Length; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * 256, 256);
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 8; j++)
            {
                ReadOnlySpan<float> sub = v.Slice(j * 32, 32);
                float sumSq = 0;
                foreach (float f in sub) sumSq += f * f;
                float rms = MathF.Sqrt(sumSq / 32);
                for (int l = 0; l < 32; l++) weights[l] = rms + MathF.Abs(sub[l]);
                (scales[j], mins[j]) = FitAffine(sub, weights, codes, trial);
                maxScale = MathF.Max(maxScale, scales[j]);
                maxMin = MathF.Max(maxMin, mins[j]);
            }
            ref BlockQ4K blk = ref dst[b];
            blk = default;
            float d = maxScale / 63f, dmin = maxMin / 63f;
            blk.D = HalfTable.FromFloat(d);
            blk.DMin = HalfTable.FromFloat(dmin);
            d = HalfTable.Values[blk.D];
            dmin = HalfTable.Values[blk.DMin];
            for (int j = 0; j < 8; j++)
            {
                int sc = d > 0 ? Math.Clamp((int)MathF.Round(scales[j] / d), 0, 63) : 0;
                int m = dmin > 0 ? Math.Clamp((int)MathF.Round(mins[j] / dmin), 0, 63) : 0;
                if (j < 4)
                {
                    blk.Sc[j] = (byte)sc;
                    blk.Sc[j + 4] = (byte)m;
                }
                else
                {
                    blk.Sc[j + 4] = (byte)((sc & 0xF) | ((m & 0xF) << 4));
                    blk.Sc[j - 4] |= (byte)((sc >> 4) << 6);
                    blk.Sc[j] |= (byte)((m >> 4) << 6);
                }
                float s = d * sc, mm = dmin * m, inv = s > 0 ? 1f / s : 0f;
                int group = j / 2, shift = (j % 2) * 4;
                for (int l = 0; l < 32; l++)
                {
                    int q = Math.Clamp((int)MathF.Round((v[j * 32 + l] + mm) * inv), 0, 15);
                    blk.Qs[group * 32 + l] |= (byte)(q << shift);
                }
            }
        }
    }

    /// <summary>Best (scale, min) with x ≈ scale·q − min for 4-bit q: ggml's make_qkx2_quants (rmin −1, rdelta 0.1,
    /// 20 steps), weighted least squares per candidate, min clamped to ≥ 0.</summary>
    private static (float Scale, float Min) FitAffine(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<byte> best, Span<byte> trial)
    {
        const int nmax = 15;
        float lo = 0, hi = float.MinValue, sumW = 0, sumX = 0;
        for (int i = 0; i < x.Length; i++)
        {
            lo = MathF.Min(lo, x[i]);
            hi = MathF.Max(hi, x[i]);
            sumW += w[i];
            sumX += w[i] * x[i];
        }
        if (hi <= lo) return (0, -lo);
        float scale = (hi - lo) / nmax, offset = lo, bestErr = 0;
        float iscale0 = nmax / (hi - lo);
        for (int i = 0; i < x.Length; i++)
        {
            best[i] = (byte)Math.Clamp((int)MathF.Round(iscale0 * (x[i] - lo)), 0, nmax);
            float diff = scale * best[i] + lo - x[i];
            bestErr += w[i] * diff * diff;
        }
        for (int step = 0; step <= 20; step++)
        {
            float iscale = (-1f + 0.1f * step + nmax) / (hi - lo);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < x.Length; i++)
            {
                int l = Math.Clamp((int)MathF.Round(iscale * (x[i] - lo)), 0, nmax);
                trial[i] = (byte)l;
                sumL += w[i] * l;
                sumL2 += w[i] * l * l;
                sumXL += w[i] * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det <= 0) continue;
            float thisScale = (sumW * sumXL - sumX * sumL) / det;
            float thisOffset = (sumL2 * sumX - sumL * sumXL) / det;
            if (thisOffset > 0)
            {
                thisOffset = 0;
                thisScale = sumXL / sumL2;
            }
            float err = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float diff = thisScale * trial[i] + thisOffset - x[i];
                err += w[i] * diff * diff;
            }
            if (err < bestErr)
            {
                trial.CopyTo(best);
                bestErr = err;
                scale = thisScale;
                offset = thisOffset;
            }
        }
        return (scale, -offset);
    }

    /// <summary>Σ w·x against activations quantised per 256 (codes, one scale per super-block, Σq per 32).</summary>
    public static float VecDotQ4KQ8K(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<int> blockSum)
    {
        if (xq.Length != w.Length * 256 || xd.Length != w.Length || blockSum.Length != w.Length * 8)
            ThrowHelper.LengthMismatch(nameof(xq), w.Length * 256, xq.Length);
        return Avx2.IsSupported ? V256(w, xq, xd, blockSum) : Scalar(w, xq, xd, blockSum);
    }

    /// <summary>The specification: per super-block the exact integer Σ_j sc_j·(Σ q·x) and Σ_j m_j·Σx, then
    /// d·dx·first − dmin·dx·second.</summary>
    internal static float Scalar(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<int> blockSum)
    {
        float sum = 0;
        for (int b = 0; b < w.Length; b++)
        {
            BlockQ4K blk = w[b];
            int isum = 0, msum = 0;
            for (int j = 0; j < 8; j++)
            {
                var (sc, m) = ScaleMin(ref blk, j);
                int group = j / 2, shift = (j % 2) * 4, dot = 0;
                for (int l = 0; l < 32; l++) dot += ((blk.Qs[group * 32 + l] >> shift) & 0xF) * xq[b * 256 + j * 32 + l];
                isum += sc * dot;
                msum += m * blockSum[b * 8 + j];
            }
            sum += HalfTable.Values[blk.D] * xd[b] * isum - HalfTable.Values[blk.DMin] * xd[b] * msum;
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<int> blockSum)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        ref int bs = ref MemoryMarshal.GetReference(blockSum);
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        Span<uint> packed = stackalloc uint[4];
        Vector256<float> acc = Vector256<float>.Zero;
        float correction = 0;
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ4K blk = ref Unsafe.AsRef(in w[b]);
            // Unpack the eight 6-bit scales (bytes 0..7 of packed) and minimums (bytes 8..15), as ggml does.
            ref byte scb = ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc);
            uint u0 = Unsafe.ReadUnaligned<uint>(ref scb), u1 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref scb, 4)), u2 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref scb, 8));
            packed[3] = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
            packed[2] = u1 & 0x3f3f3f3f;
            packed[1] = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
            packed[0] = u0 & 0x3f3f3f3f;
            ReadOnlySpan<byte> sc = System.Runtime.InteropServices.MemoryMarshal.AsBytes(packed);
            Vector256<int> mins = Avx2.ConvertToVector256Int32(Vector128.Create(packed[2], packed[3], 0, 0).AsByte());
            int msum = Vector256.Sum(mins * Vector256.LoadUnsafe(ref bs, (nuint)(b * 8)));
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector256<int> isum = Vector256<int>.Zero;
            for (int g = 0; g < 4; g++)
            {
                Vector256<byte> raw = Vector256.LoadUnsafe(ref qs, (nuint)(g * 32));
                Vector256<byte> q0 = raw & low, q1 = Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & low;
                // u4 × s8 pairs fit int16 (≤ 3810); the 6-bit sub-block scale is applied by the widening pair-add.
                isum += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64))), Vector256.Create((short)sc[2 * g]));
                isum += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64 + 32))), Vector256.Create((short)sc[2 * g + 1]));
            }
            float dx = xd[b];
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Create(HalfTable.Values[blk.D] * dx), acc);
            correction += HalfTable.Values[blk.DMin] * dx * msum;
        }
        return Vector256.Sum(acc) - correction;
    }
}
