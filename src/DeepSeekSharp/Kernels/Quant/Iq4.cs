using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>ggml's non-linear 4-bit formats: each 4-bit code picks one of sixteen fixed levels (denser near zero),
/// times a scale. In each 32 weights, byte j of the 16 code bytes holds weight j (low nibble) and j + 16 (high).
/// <list type="bullet">
/// <item>IQ4_NL (18 B per 32): fp16 d, 16 code bytes: w = d · level[q].</item>
/// <item>IQ4_XS (136 B per 256): fp16 d, u16 high bits and 4 bytes of low nibbles of eight 6-bit sub-block scales
/// (stored + 32), 128 code bytes: w = d · (ls − 32) · level[q].</item>
/// </list>
/// Read from GGUF files; the quantisers (nearest level under a max-magnitude scale) serve tests and conversion.</summary>
public static class Iq4
{
    /// <summary>The sixteen levels (ggml's kvalues_iq4nl).</summary>
    public static ReadOnlySpan<sbyte> Levels => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    private static float Half(ReadOnlySpan<byte> b, int at) => HalfTable.Values[BinaryPrimitives.ReadUInt16LittleEndian(b[at..])];

    private static void Codes(ReadOnlySpan<byte> qs, float scale, Span<float> y)
    {
        ReadOnlySpan<sbyte> levels = Levels;
        for (int j = 0; j < 16; j++)
        {
            y[j] = scale * levels[qs[j] & 0xF];
            y[j + 16] = scale * levels[qs[j] >> 4];
        }
    }

    public static void DequantizeNl(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 32; b++)
            Codes(src.Slice(b * 18 + 2, 16), Half(src, b * 18), dst.Slice(b * 32, 32));
    }

    public static void DequantizeXs(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / 256; b++)
        {
            ReadOnlySpan<byte> blk = src.Slice(b * 136, 136);
            float d = Half(blk, 0);
            ushort high = BinaryPrimitives.ReadUInt16LittleEndian(blk[2..]);
            for (int s = 0; s < 8; s++)
            {
                int ls = ((blk[4 + s / 2] >> (4 * (s % 2))) & 0xF) | (((high >> (2 * s)) & 3) << 4);
                Codes(blk.Slice(8 + s * 16, 16), d * (ls - 32), dst.Slice(b * 256 + s * 32, 32));
            }
        }
    }

    /// <summary>The code whose level is nearest to v.</summary>
    private static int Nearest(float v)
    {
        ReadOnlySpan<sbyte> levels = Levels;
        int best = 0;
        for (int k = 1; k < 16; k++)
            if (MathF.Abs(levels[k] - v) < MathF.Abs(levels[best] - v)) best = k;
        return best;
    }

    /// <summary>Scale putting the value of largest magnitude on the level of the same sign at the range end.</summary>
    private static float ScaleFor(ReadOnlySpan<float> x)
    {
        float amax = 0, max = 0;
        foreach (float f in x)
            if (MathF.Abs(f) > amax) (amax, max) = (MathF.Abs(f), f);
        return max < 0 ? max / -127f : max / 113f;
    }

    private static void Encode(ReadOnlySpan<float> x, float scale, Span<byte> qs)
    {
        float inv = scale != 0 ? 1 / scale : 0;
        for (int j = 0; j < 16; j++) qs[j] = (byte)(Nearest(x[j] * inv) | (Nearest(x[j + 16] * inv) << 4));
    }

    public static void QuantizeNl(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 32, 32);
            ushort h = HalfTable.FromFloat(ScaleFor(v));
            BinaryPrimitives.WriteUInt16LittleEndian(dst[(b * 18)..], h);
            Encode(v, HalfTable.Values[h], dst.Slice(b * 18 + 2, 16));
        }
    }

    public static void QuantizeXs(ReadOnlySpan<float> src, Span<byte> dst)
    {
        Span<float> scales = stackalloc float[8];
        for (int b = 0; b < src.Length / 256; b++)
        {
            ReadOnlySpan<float> v = src.Slice(b * 256, 256);
            Span<byte> blk = dst.Slice(b * 136, 136);
            blk.Clear();
            float maxScale = 0;
            for (int s = 0; s < 8; s++)
            {
                scales[s] = ScaleFor(v.Slice(s * 32, 32));
                maxScale = MathF.Max(maxScale, scales[s]);
            }
            ushort h = HalfTable.FromFloat(maxScale / 31);
            BinaryPrimitives.WriteUInt16LittleEndian(blk, h);
            float d = HalfTable.Values[h];
            ushort high = 0;
            for (int s = 0; s < 8; s++)
            {
                int ls = d > 0 ? Math.Clamp((int)MathF.Round(scales[s] / d), 0, 31) + 32 : 32;
                blk[4 + s / 2] |= (byte)((ls & 0xF) << (4 * (s % 2)));
                high |= (ushort)((ls >> 4) << (2 * s));
                Encode(v.Slice(s * 32, 32), d * (ls - 32), blk.Slice(8 + s * 16, 16));
            }
            BinaryPrimitives.WriteUInt16LittleEndian(blk[2..], high);
        }
    }
}

/// <summary>IQ4_NL's codes: Q4_0's nibble layout, each nibble replaced by its level (a byte shuffle of the sixteen
/// levels), so the Q8_0 row and panel kernels serve it as they serve Q4_0 and Q5_0 (<see cref="IBlockCodes"/>). The
/// levels span −127..113, so the codes take Q8_0's sign trick (or its bias of 128 with AVX-VNNI).</summary>
internal readonly struct Iq4NlCodes : IBlockCodes
{
    public static int Bytes => 18;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Codes(ref byte block)
    {
        // The levels in both 128-bit lanes, written in place (see the note on vector constants in BlockDots).
        Vector256<sbyte> levels = Vector256.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        return Avx2.Shuffle(levels, Q5_0Codes.Nibbles(ref Unsafe.Add(ref block, 2)).AsSByte());
    }

    public static int Code(ReadOnlySpan<byte> block, int i) => Iq4.Levels[i < 16 ? block[2 + i] & 0xF : block[2 + i - 16] >> 4];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high)
    {
        Vector128<sbyte> levels = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        Q5_0Codes.Nibbles128(ref Unsafe.Add(ref block, 2), out Vector128<byte> l, out Vector128<byte> h);
        low = Vector128.Shuffle(levels, l.AsSByte());
        high = Vector128.Shuffle(levels, h.AsSByte());
    }

    public static int Offset => 0;

    /// <summary>Not used: the levels take the sign trick or the bias of 128, as Q8_0's codes do.</summary>
    public static Vector256<byte> Unsigned(ref byte block) => default;

    /// <summary>Not used (see <see cref="Unsigned"/>).</summary>
    public static void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high) => low = high = default;
}

/// <summary>IQ4_XS products against activations quantised per 256 (ggml's Q8_K): per super-block the exact integer
/// I = Σ_s (ls_s − 32) · Σ level·x over its eight sub-blocks of 32, then A = fma(I, d·dx, A) in block order
/// (<see cref="Scalar"/>, the specification). The AVX2 kernel takes each sub-block's levels by a byte shuffle
/// (<see cref="Iq4NlCodes"/>' nibble order), Q8_0's sign trick for the pair sums, and the sub-block's scale in the
/// widening pair-add: the same integers, so the same bits.</summary>
public static class Iq4Xs
{
    public const int BlockBytes = 136;

    /// <summary>Sub-block <paramref name="s"/>'s scale, ls − 32 (−32..31).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Scale(ref byte blk, int s) =>
        (((Unsafe.Add(ref blk, 4 + s / 2) >> (4 * (s % 2))) & 0xF) | ((Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 2)) >> (2 * s)) & 3) << 4) - 32;

    /// <summary>Σ w·x of an IQ4_XS row.</summary>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        if (w.Length != xd.Length * BlockBytes || xq.Length != xd.Length * 256) ThrowHelper.LengthMismatch(nameof(xq), xd.Length * 256, xq.Length);
        if (Avx2.IsSupported) return V256(w, xq, xd);
        return IntDots128.IsSupported ? V128(w, xq, xd) : Scalar(w, xq, xd);
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2): each sub-block's levels as an IQ4_NL block's
    /// (<see cref="Iq4NlCodes.Codes128"/>), its exact Σ level·x times its scale, then the specification's fused step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        ref byte wb = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ref byte blk = ref Unsafe.Add(ref wb, b * BlockBytes);
            int isum = 0;
            for (int s = 0; s < 8; s++)
            {
                Iq4NlCodes.Codes128(ref Unsafe.Add(ref blk, 6 + 16 * s), out Vector128<sbyte> low, out Vector128<sbyte> high);
                isum += Scale(ref blk, s) * IntDots128.Dot32(low, high, ref Unsafe.Add(ref x, b * 256 + 32 * s));
            }
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref blk)] * xd[b], a);
        }
        return a;
    }

    /// <summary>The specification (see the class).</summary>
    internal static float Scalar(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ReadOnlySpan<byte> blk = w.Slice(b * BlockBytes, BlockBytes);
            int isum = 0;
            for (int s = 0; s < 8; s++)
            {
                // Sub-block s's sixteen code bytes sit as an IQ4_NL block's do, 2 bytes after the 18 from 6 + 16s.
                ReadOnlySpan<byte> nl = blk.Slice(6 + 16 * s, 18);
                int dot = 0;
                for (int i = 0; i < 32; i++) dot += Iq4NlCodes.Code(nl, i) * xq[b * 256 + 32 * s + i];
                isum += Scale(ref MemoryMarshal.GetReference(blk), s) * dot;
            }
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[BitConverter.ToUInt16(blk)] * xd[b], a);
        }
        return a;
    }

    /// <summary>AVX2 (see the class).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        ref byte blk = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            Vector256<int> isum = SubBlock(ref blk, ref x, 0) + SubBlock(ref blk, ref x, 1) + SubBlock(ref blk, ref x, 2) + SubBlock(ref blk, ref x, 3)
                + SubBlock(ref blk, ref x, 4) + SubBlock(ref blk, ref x, 5) + SubBlock(ref blk, ref x, 6) + SubBlock(ref blk, ref x, 7);
            a = MathF.FusedMultiplyAdd(Vector256.Sum(isum), HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref blk)] * xd[b], a);
            blk = ref Unsafe.Add(ref blk, BlockBytes);
            x = ref Unsafe.Add(ref x, 256);
        }
        return a;
    }

    /// <summary>Sub-block <paramref name="s"/> (a constant) as eight int32 partial sums of its scale · level · x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SubBlock(ref byte blk, ref sbyte x, int s)
    {
        Vector256<sbyte> codes = Iq4NlCodes.Codes(ref Unsafe.Add(ref blk, 6 + 16 * s)); // its code bytes as an IQ4_NL block's
        Vector256<sbyte> xs = Vector256.LoadUnsafe(ref x, (nuint)(32 * s));
        Vector256<short> pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(codes), Avx2.Sign(xs, codes));
        return Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)Scale(ref blk, s)));
    }
}
