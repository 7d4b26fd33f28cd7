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
/// 32·j + l of its 128). The quantisers write ggml's bytes: Q2_K and Q5_K fit each sub-block with make_qkx2_quants
/// (<see cref="ScaleMinFit"/>), Q3_K with make_q3_quants (<see cref="Q3Fit"/>), then quantise the sub-block scales
/// against one super-block scale.</summary>
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

    /// <summary>Ors scale <paramref name="j"/>'s 6-bit <paramref name="stored"/> value (the scale + 32) into a Q3_K
    /// block's zeroed 12 packed bytes: the inverse of <see cref="Q3Scale"/>.</summary>
    internal static void SetQ3Scale(Span<byte> packed, int j, int stored)
    {
        packed[j % 8] |= (byte)((stored & 0xF) << (j < 8 ? 0 : 4));
        packed[8 + j % 4] |= (byte)((stored >> 4) << (2 * (j / 4)));
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

    /// <summary>Quantises rows (a multiple of 256 weights) as ggml's quantize_row_q2_K_ref does: per sixteen weights
    /// make_qkx2_quants with absolute errors, weights |x|, codes 0..3 (<see cref="ScaleMinFit.Fit8"/>, eight sixteens at
    /// a time); the
    /// sixteen scales and minimums quantised to 4 bits against the largest of each (d, dmin = max / 15); then each
    /// sixteen's codes recomputed as nearest((x + dmin·m) / (d·sc)), kept from the fit where d·sc is zero.</summary>
    public static void QuantizeQ2K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<float> scales = stackalloc float[16], mins = stackalloc float[16], w = stackalloc float[256];
        Span<byte> codes = stackalloc byte[256];
        for (int b = 0; b < src.Length / 256; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 256, 256);
            Span<byte> blk = dst.Slice(b * 84, 84);
            blk.Clear();
            for (int i = 0; i < 256; i++) w[i] = MathF.Abs(v[i]);
            for (int half = 0; half < 2; half++)
                ScaleMinFit.Fit8(v.Slice(128 * half, 128), w.Slice(128 * half, 128), 3, -0.5f, 0.1f, 15, scales.Slice(8 * half, 8), mins.Slice(8 * half, 8),
                    codes.Slice(128 * half, 128), n: 16, absolute: true);
            float maxScale = 0, maxMin = 0;
            for (int j = 0; j < 16; j++)
            {
                if (scales[j] > maxScale) maxScale = scales[j];
                if (mins[j] > maxMin) maxMin = mins[j];
            }
            // Scales in the low nibbles against d at byte 80, minimums in the high ones against dmin at 82 (zero if all are).
            static void Quantise4(Span<byte> blk, ReadOnlySpan<float> values, float max, int shift, int at)
            {
                if (!(max > 0)) return;
                float iscale = 15f / max;
                for (int j = 0; j < 16; j++) blk[j] |= (byte)(NearestInt(iscale * values[j]) << shift);
                SetHalf(blk, at, max / 15f);
            }
            Quantise4(blk, scales, maxScale, 0, 80);
            Quantise4(blk, mins, maxMin, 4, 82);
            float d = Half(blk, 80), dmin = Half(blk, 82);
            for (int j = 0; j < 16; j++)
            {
                float s = d * (blk[j] & 0xF);
                if (s == 0) continue;
                float m = dmin * (blk[j] >> 4);
                for (int l = 0; l < 16; l++) codes[j * 16 + l] = (byte)Math.Clamp(NearestInt((v[j * 16 + l] + m) / s), 0, 3);
            }
            for (int i = 0; i < 256; i++) SetTwoBits(blk.Slice(16, 64), i, codes[i]);
        }
    }

    /// <summary>Quantises rows (a multiple of 256 weights) as ggml's quantize_row_q3_K_ref does: per sixteen weights
    /// <see cref="Q3Fit"/>; the sixteen scales quantised to 6 bits (stored + 32) against d = −max / 32 (the scale of
    /// largest magnitude on −32); then each sixteen's codes recomputed as nearest(x / (d·sc)), kept from the fit where
    /// d·sc is zero.</summary>
    public static void QuantizeQ3K(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<float> scales = stackalloc float[16];
        Span<sbyte> codes = stackalloc sbyte[256];
        for (int b = 0; b < src.Length / 256; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 256, 256);
            Span<byte> blk = dst.Slice(b * 110, 110);
            blk.Clear();
            float maxScale = 0, amax = 0;
            for (int j = 0; j < 16; j++)
            {
                scales[j] = Q3Fit(v.Slice(j * 16, 16), codes.Slice(j * 16, 16));
                if (MathF.Abs(scales[j]) > amax) (amax, maxScale) = (MathF.Abs(scales[j]), scales[j]);
            }
            if (maxScale != 0)
            {
                float iscale = -32f / maxScale;
                for (int j = 0; j < 16; j++)
                {
                    SetQ3Scale(blk.Slice(96, 12), j, Math.Clamp((int)(sbyte)NearestInt(iscale * scales[j]), -32, 31) + 32);
                }
                SetHalf(blk, 108, 1 / iscale);
            }
            float d = Half(blk, 108);
            for (int j = 0; j < 16; j++)
            {
                float s = d * Q3Scale(blk.Slice(96, 12), j);
                if (s == 0) continue;
                for (int l = 0; l < 16; l++) codes[j * 16 + l] = (sbyte)(Math.Clamp(NearestInt(v[j * 16 + l] / s), -4, 3) + 4);
            }
            for (int i = 0; i < 256; i++)
            {
                SetTwoBits(blk.Slice(32, 64), i, codes[i] & 3);
                if (codes[i] > 3) blk[i % 32] |= (byte)(1 << (i / 32)); // the third bit of code i: bit i / 32 of byte i mod 32
            }
        }
    }

    /// <summary>Sets code i (0..3) of a super-block in Q2_K's and Q3_K's 64 bytes of 2-bit codes (zeroed first): byte l
    /// of each 32-byte group holds four codes 32 apart, bits 2k and 2k + 1 code 32·k + l of its 128.</summary>
    internal static void SetTwoBits(Span<byte> qs, int i, int code) => qs[i / 128 * 32 + i % 32] |= (byte)(code << (2 * (i % 128 / 32)));

    /// <summary>ggml's make_q3_quants(16, 4, x, L, do_rmse: true): the value of largest magnitude on −4, codes clamped to
    /// −4..3; then up to five passes that move single codes to nearest(x · Σw·l² / Σw·x·l) over the others (w = x²)
    /// where that raises (Σw·x·l)² / Σw·l², the scale Σw·x·l / Σw·l². Codes are left + 4 (0..7); all zero where every
    /// value is below ggml's GROUP_MAX_EPS.</summary>
    internal static float Q3Fit(ReadOnlySpan<float> x, Span<sbyte> codes)
    {
        const int nmax = 4;
        float max = 0, amax = 0;
        foreach (float f in x)
            if (MathF.Abs(f) > amax) (amax, max) = (MathF.Abs(f), f);
        if (amax < 1e-15f)
        {
            codes[..x.Length].Clear();
            return 0;
        }
        float iscale = -nmax / max, sumlx = 0, suml2 = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            codes[i] = (sbyte)l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int pass = 0; pass < 5; pass++)
        {
            int changed = 0;
            for (int i = 0; i < x.Length; i++)
            {
                float w = x[i] * x[i], slx = sumlx - w * x[i] * codes[i];
                if (!(slx > 0)) continue;
                float sl2 = suml2 - w * codes[i] * codes[i];
                int l = Math.Clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (l == codes[i]) continue;
                slx += w * x[i] * l;
                sl2 += w * l * l;
                if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                {
                    codes[i] = (sbyte)l;
                    (sumlx, suml2) = (slx, sl2);
                    changed++;
                }
            }
            if (changed == 0) break;
        }
        for (int i = 0; i < x.Length; i++) codes[i] += nmax;
        return suml2 > 0 ? sumlx / suml2 : 0;
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
