using System.Buffers.Binary;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>The k-quant formats Q2_K, Q3_K and Q5_K: the scalar specifications of their values (their product kernels
/// are <see cref="LowBitKQuants"/> and <see cref="Q5K"/>), with
/// ggml's block layouts; super-blocks of 256 weights:
/// <list type="bullet">
/// <item>Q2_K (84 B): 16 bytes of (4-bit scale | 4-bit min &lt;&lt; 4) per 16 weights, 64 bytes of 2-bit codes, fp16 d,
/// fp16 dmin: w = d·sc·q − dmin·m.</item>
/// <item>Q3_K (110 B): 32 bytes of high bits, 64 bytes of 2-bit codes, 12 bytes packing sixteen 6-bit scales
/// (stored + 32), fp16 d: w = d·(sc − 32)·(q − 4).</item>
/// <item>Q5_K (176 B): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and minimums as Q4_K, 32 bytes of fifth bits,
/// 128 bytes of 4-bit codes: w = d·sc·q − dmin·m.</item>
/// </list>
/// In Q2_K and Q3_K, byte l of each 32-byte code group holds four weights 32 apart (bits 2j..2j+1 for weight
/// 32·j + l of its 128). The Q5_K quantiser writes ggml's bytes (<see cref="ScaleMinFit"/>); Q2_K's fits each
/// sub-block after make_qkx2_quants and Q3_K's by its largest magnitude (not ggml's bytes), then each quantises the
/// sub-block scales against one super-block scale.</summary>
public static class KQuants
{
    internal static float Half(ReadOnlySpan<byte> b, int at) => HalfTable.Values[BinaryPrimitives.ReadUInt16LittleEndian(b[at..])];
    private static float SetHalf(Span<byte> b, int at, float v)
    {
        ushort h = HalfTable.FromFloat(v);
        BinaryPrimitives.WriteUInt16LittleEndian(b[at..], h);
        return HalfTable.Values[h];
    }

    public static void DequantizeQ2K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 256; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 84, 84);
            ReadOnlySpan<byte> scales = blk[..16], qs = blk.Slice(16, 64);
            float d = Half(blk, 80), dmin = Half(blk, 82);
            for (int i = 0; i < 256; i++)
            {
                int half = i / 128, j = i % 128 / 32, l = i % 32;
                byte sc = scales[i / 16];
                dst[b * 256 + i] = d * (sc & 0xF) * ((qs[half * 32 + l] >> (2 * j)) & 3) - dmin * (sc >> 4);
            }
        }
    }

    /// <summary>The sixteen signed 6-bit scales of a Q3_K block (ggml's kmask unpacking), minus 32.</summary>
    internal static int Q3Scale(ReadOnlySpan<byte> packed, int j)
    {
        int low = j < 8 ? packed[j % 8] & 0xF : packed[j - 8] >> 4;
        int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        return (low | (high << 4)) - 32;
    }

    public static void DequantizeQ3K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 256; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 110, 110);
            ReadOnlySpan<byte> hmask = blk[..32], qs = blk.Slice(32, 64), scales = blk.Slice(96, 12);
            float d = Half(blk, 108);
            for (int i = 0; i < 256; i++)
            {
                int half = i / 128, j = i % 128 / 32, l = i % 32;
                int q = (qs[half * 32 + l] >> (2 * j)) & 3;
                if ((hmask[l] & (1 << (half * 4 + j))) == 0) q -= 4;
                dst[b * 256 + i] = d * Q3Scale(scales, i / 16) * q;
            }
        }
    }

    public static void DequantizeQ5K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 256; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 176, 176);
            float d = Half(blk, 0), dmin = Half(blk, 2);
            ReadOnlySpan<byte> scales = blk.Slice(4, 12), qh = blk.Slice(16, 32), qs = blk.Slice(48, 128);
            for (int i = 0; i < 256; i++)
            {
                int sub = i / 32, group = i / 64, l = i % 32;
                var (sc, m) = ScaleMin6(scales, sub);
                int q = (sub % 2 == 0 ? qs[group * 32 + l] & 0xF : qs[group * 32 + l] >> 4) | (((qh[l] >> sub) & 1) << 4);
                dst[b * 256 + i] = d * sc * q - dmin * m;
            }
        }
    }

    /// <summary>Scale and minimum of sub-block j from the 12-byte packing Q4_K and Q5_K share (get_scale_min_k4).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static (int Scale, int Min) ScaleMin6(ReadOnlySpan<byte> s, int j) => ScaleMin6(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(s[..12]), j);

    /// <summary>The same from a reference to the 12 bytes (no span: the panel kernels call it for every sub-block).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static (int Scale, int Min) ScaleMin6(ref byte s, int j)
    {
        ref byte a = ref System.Runtime.CompilerServices.Unsafe.Add(ref s, j), b = ref System.Runtime.CompilerServices.Unsafe.Add(ref s, j + 4);
        return j < 4
            ? (a & 63, b & 63)
            : ((b & 0xF) | ((System.Runtime.CompilerServices.Unsafe.Add(ref s, j - 4) >> 6) << 4), (b >> 4) | ((a >> 6) << 4));
    }

    /// <summary>Stores sub-block j's 6-bit scale and minimum into the 12-byte packing (bytes start zeroed).</summary>
    internal static void SetScaleMin6(Span<byte> s, int j, int sc, int m)
    {
        if (j < 4)
        {
            s[j] |= (byte)sc;
            s[j + 4] |= (byte)m;
        }
        else
        {
            s[j + 4] |= (byte)((sc & 0xF) | ((m & 0xF) << 4));
            s[j - 4] |= (byte)((sc >> 4) << 6);
            s[j] |= (byte)((m >> 4) << 6);
        }
    }

    /// <summary>ggml's nearest_int: to nearest, ties to even (its float trick, for magnitudes below 2²²).</summary>
    internal static int NearestInt(float f) => (int)MathF.Round(f);

    /// <summary>Best (scale, min ≥ 0) with x ≈ scale·q − min, q in 0..nmax, after ggml's make_qkx2_quants: try
    /// scales around (max − min)/nmax, weighted least squares for each, keep the smallest weighted error.</summary>
    internal static (float Scale, float Min) FitAffine(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int nmax, float rmin, float rdelta, int nstep)
    {
        float lo = 0, hi = float.MinValue, sumW = 0, sumX = 0;
        for (int i = 0; i < x.Length; i++)
        {
            lo = MathF.Min(lo, x[i]);
            hi = MathF.Max(hi, x[i]);
            sumW += w[i];
            sumX += w[i] * x[i];
        }
        if (hi <= lo) return (0, -lo);
        float bestScale = (hi - lo) / nmax, bestOffset = lo, bestErr = FitError(x, w, lo, nmax, nmax / (hi - lo), bestScale, bestOffset);
        for (int step = 0; step <= nstep; step++)
        {
            float iscale = (rmin + rdelta * step + nmax) / (hi - lo);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float q = Math.Clamp(MathF.Round(iscale * (x[i] - lo)), 0, nmax);
                sumL += w[i] * q;
                sumL2 += w[i] * q * q;
                sumXL += w[i] * q * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det <= 0) continue;
            float scale = (sumW * sumXL - sumX * sumL) / det, offset = (sumL2 * sumX - sumL * sumXL) / det;
            if (offset > 0) (offset, scale) = (0, sumXL / sumL2);
            float err = FitError(x, w, lo, nmax, iscale, scale, offset);
            if (err < bestErr) (bestErr, bestScale, bestOffset) = (err, scale, offset);
        }
        return (bestScale, -bestOffset);
    }

    private static float FitError(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float lo, int nmax, float iscale, float scale, float offset)
    {
        float e = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float q = Math.Clamp(MathF.Round(iscale * (x[i] - lo)), 0, nmax), diff = scale * q + offset - x[i];
            e += w[i] * diff * diff;
        }
        return e;
    }

    public static void QuantizeQ2K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<float> scales = stackalloc float[16], mins = stackalloc float[16], w = stackalloc float[16];
        for (int b = 0; b < src.Length / 256; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 256, 256);
            Span<byte> blk = dst.Slice(b * 84, 84);
            blk.Clear();
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 16; j++)
            {
                for (int l = 0; l < 16; l++) w[l] = MathF.Abs(v[j * 16 + l]);
                (scales[j], mins[j]) = FitAffine(v.Slice(j * 16, 16), w, 3, -0.5f, 0.1f, 15);
                maxScale = MathF.Max(maxScale, scales[j]);
                maxMin = MathF.Max(maxMin, mins[j]);
            }
            float d = SetHalf(blk, 80, maxScale / 15), dmin = SetHalf(blk, 82, maxMin / 15);
            for (int j = 0; j < 16; j++)
            {
                int ls = d > 0 ? Math.Clamp((int)MathF.Round(scales[j] / d), 0, 15) : 0;
                int lm = dmin > 0 ? Math.Clamp((int)MathF.Round(mins[j] / dmin), 0, 15) : 0;
                blk[j] = (byte)(ls | (lm << 4));
                float s = d * ls, m = dmin * lm;
                for (int l = 0; l < 16; l++)
                {
                    int i = j * 16 + l;
                    int q = s > 0 ? Math.Clamp((int)MathF.Round((v[i] + m) / s), 0, 3) : 0;
                    blk[16 + i / 128 * 32 + i % 32] |= (byte)(q << (2 * (i % 128 / 32)));
                }
            }
        }
    }

    public static void QuantizeQ3K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<float> scales = stackalloc float[16];
        for (int b = 0; b < src.Length / 256; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 256, 256);
            Span<byte> blk = dst.Slice(b * 110, 110);
            blk.Clear();
            float maxScale = 0;
            for (int j = 0; j < 16; j++)
            {
                float amax = 0, max = 0;
                foreach (float f in v.Slice(j * 16, 16))
                    if (MathF.Abs(f) > amax) (amax, max) = (MathF.Abs(f), f);
                scales[j] = max / -4; // the largest magnitude lands on −4, the end of the range with room
                if (MathF.Abs(scales[j]) > MathF.Abs(maxScale)) maxScale = scales[j];
            }
            float iscale = maxScale != 0 ? -32 / maxScale : 0;
            float d = SetHalf(blk, 108, iscale != 0 ? 1 / iscale : 0);
            for (int j = 0; j < 16; j++)
            {
                int ls = Math.Clamp((int)MathF.Round(iscale * scales[j]), -32, 31);
                int stored = ls + 32;
                if (j < 8) blk[96 + j] |= (byte)(stored & 0xF);
                else blk[96 + j - 8] |= (byte)((stored & 0xF) << 4);
                blk[96 + 8 + j % 4] |= (byte)((stored >> 4) << (2 * (j / 4)));
                float s = d * ls;
                for (int l = 0; l < 16; l++)
                {
                    int i = j * 16 + l;
                    int q = s != 0 ? Math.Clamp((int)MathF.Round(v[i] / s), -4, 3) + 4 : 4;
                    int half = i / 128, jj = i % 128 / 32, ll = i % 32;
                    blk[32 + half * 32 + ll] |= (byte)((q & 3) << (2 * jj));
                    if (q > 3) blk[ll] |= (byte)(1 << (half * 4 + jj));
                }
            }
        }
    }

    /// <summary>Quantises rows (a multiple of 256 weights) as ggml's quantize_row_q5_K_ref does
    /// (<see cref="ScaleMinFit.SuperBlock"/> with 5-bit codes: make_qkx2_quants over 16 scales, rmin −0.5): the bytes
    /// llama-quantize writes.</summary>
    public static void QuantizeQ5K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<byte> codes = stackalloc byte[256];
        for (int b = 0; b < src.Length / 256; b++)
        {
            Span<byte> blk = dst.Slice(b * 176, 176);
            ScaleMinFit.SuperBlock(src.Slice(b * 256, 256), 31, -0.5f, 15, blk.Slice(4, 12), codes, out ushort d, out ushort dmin);
            BinaryPrimitives.WriteUInt16LittleEndian(blk, d);
            BinaryPrimitives.WriteUInt16LittleEndian(blk[2..], dmin);
            // Each 64 weights (sub-blocks 2g, 2g + 1): byte l their low four bits (code l, code 32 + l), bits 2g and
            // 2g + 1 of high byte l their fifth.
            Span<byte> high = blk.Slice(16, 32), low = blk.Slice(48, 128);
            high.Clear();
            for (int g = 0; g < 4; g++)
                for (int l = 0; l < 32; l++)
                {
                    int c0 = codes[64 * g + l], c1 = codes[64 * g + 32 + l];
                    low[32 * g + l] = (byte)((c0 & 0xF) | ((c1 & 0xF) << 4));
                    high[l] |= (byte)((c0 >> 4) << (2 * g) | (c1 >> 4) << (2 * g + 1));
                }
        }
    }
}
