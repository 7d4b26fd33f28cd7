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
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (int Scale, int Min) ScaleMin(ref BlockQ4K b, int j) => KQuants.ScaleMin6(ref Unsafe.As<BlockQ4K.Scales, byte>(ref b.Sc), j);

    private static Span<byte> ScaleBytes(ref BlockQ4K b) => MemoryMarshal.CreateSpan(ref Unsafe.As<BlockQ4K.Scales, byte>(ref b.Sc), 12);

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

    /// <summary>Quantises one row (length a multiple of 256) as ggml's quantize_row_q4_K_ref does
    /// (<see cref="ScaleMinFit.SuperBlock"/> with 4-bit codes: make_qkx2_quants over 21 scales, rmin −1): the bytes
    /// llama-quantize writes.</summary>
    public static void QuantizeRow(ReadOnlySpan<float> x, Span<BlockQ4K> dst)
    {
        if (x.Length != dst.Length * 256) ThrowHelper.LengthMismatch(nameof(dst), x.Length / 256, dst.Length);
        Span<byte> codes = stackalloc byte[256];
        for (int b = 0; b < dst.Length; b++)
        {
            ref BlockQ4K blk = ref dst[b];
            ScaleMinFit.SuperBlock(x.Slice(b * 256, 256), 15, -1f, 20, ScaleBytes(ref blk), codes, out blk.D, out blk.DMin);
            // Each 64 weights: byte l holds code l (low nibble) and code 32 + l (high).
            for (int g = 0; g < 4; g++)
                for (int l = 0; l < 32; l++)
                    blk.Qs[32 * g + l] = (byte)(codes[64 * g + l] | (codes[64 * g + 32 + l] << 4));
        }
    }

    /// <summary>Σ w·x against activations quantised per 256 (codes, one scale per super-block, Σq per 32).</summary>
    public static float VecDotQ4KQ8K(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        if (xq.Length != w.Length * 256 || xd.Length != w.Length || blockSum.Length != w.Length * 8)
            ThrowHelper.LengthMismatch(nameof(xq), w.Length * 256, xq.Length);
        if (Avx2.IsSupported) return V256(w, xq, xd, blockSum);
        return IntDots128.IsSupported ? V128(w, xq, xd, blockSum) : Scalar(w, xq, xd, blockSum);
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2): each sub-block's Σ q·x with <see cref="IntDots128"/>,
    /// weighted by its scale in the lanes, the totals I and M exact as in <see cref="Scalar"/>, then its two fused
    /// steps — the specification's bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        float a = 0, m = 0;
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ4K blk = ref Unsafe.AsRef(in w[b]);
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector128<int> acc = Vector128<int>.Zero;
            int msum = 0;
            for (int g = 0; g < 4; g++)
            {
                // Sub-block 2g: the low nibbles of bytes 32g .. 32g + 31, against x[64g ..]; 2g + 1 the high ones, x[64g + 32 ..].
                Vector128<byte> p0 = Vector128.LoadUnsafe(ref qs, (nuint)(32 * g)), p1 = Vector128.LoadUnsafe(ref qs, (nuint)(32 * g + 16));
                (int sc0, int mn0) = ScaleMin(ref blk, 2 * g);
                (int sc1, int mn1) = ScaleMin(ref blk, 2 * g + 1);
                Vector128<int> lo = IntDots128.Add(IntDots128.Add(Vector128<int>.Zero, (p0 & nibble).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g))),
                    (p1 & nibble).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 16)));
                Vector128<int> hi = IntDots128.Add(IntDots128.Add(Vector128<int>.Zero, Vector128.ShiftRightLogical(p0, 4).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 32))),
                    Vector128.ShiftRightLogical(p1, 4).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 48)));
                acc += lo * sc0 + hi * sc1;
                msum += mn0 * blockSum[b * 8 + 2 * g] + mn1 * blockSum[b * 8 + 2 * g + 1];
            }
            int isum = Vector128.Sum(acc);
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[blk.D] * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, HalfTable.Values[blk.DMin] * xd[b], m);
        }
        return a - m;
    }

    /// <summary>The specification: per super-block the exact integers I = Σ_j sc_j·(Σ q·x) and M = Σ_j m_j·Σx, then
    /// two sums fused in block order, A = fma(I, d·dx, A) and B = fma(M, dmin·dx, B); the result is A − B. Every
    /// path (AVX2 one and four tokens, the AVX-512 panels) computes exactly these steps.</summary>
    internal static float Scalar(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        float a = 0, m = 0;
        for (int b = 0; b < w.Length; b++)
        {
            BlockQ4K blk = w[b];
            int isum = 0, msum = 0;
            for (int j = 0; j < 8; j++)
            {
                var (sc, mn) = ScaleMin(ref blk, j);
                int group = j / 2, shift = (j % 2) * 4, dot = 0;
                for (int l = 0; l < 32; l++) dot += ((blk.Qs[group * 32 + l] >> shift) & 0xF) * xq[b * 256 + j * 32 + l];
                isum += sc * dot;
                msum += mn * blockSum[b * 8 + j];
            }
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[blk.D] * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, HalfTable.Values[blk.DMin] * xd[b], m);
        }
        return a - m;
    }

    /// <summary>AVX2, as ggml's q4_K·q8_K: scales and minimums unpacked in registers, each sub-block's scale
    /// broadcast by a byte shuffle, u4 × s8 pair sums (maddubs) weighted by the scale (maddwd); the minimums' term
    /// Σ m_j·Σx_j by one maddwd. Both integer sums are reduced per super-block and fused as <see cref="Scalar"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        ref short bs = ref MemoryMarshal.GetReference(blockSum);
        Vector128<float> am = Vector128<float>.Zero; // lane 0: Σ fma(I, d·dx); lane 1: Σ fma(M, dmin·dx)
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ4K blk = ref Unsafe.AsRef(in w[b]);
            Vector256<short> lanes = ScalesAndMins(ref blk);
            Vector256<byte> scales = Avx2.Permute4x64(lanes.AsUInt64(), 0x44).AsByte();
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(lanes.GetUpper(), Vector128.LoadUnsafe(ref bs, (nuint)(b * 8)));
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector256<int> isum = Group(ref qs, ref xb, 0, Avx2.Shuffle(scales, Pick(0)).AsInt16(), Avx2.Shuffle(scales, Pick(1)).AsInt16())
                + Group(ref qs, ref xb, 1, Avx2.Shuffle(scales, Pick(2)).AsInt16(), Avx2.Shuffle(scales, Pick(3)).AsInt16())
                + Group(ref qs, ref xb, 2, Avx2.Shuffle(scales, Pick(4)).AsInt16(), Avx2.Shuffle(scales, Pick(5)).AsInt16())
                + Group(ref qs, ref xb, 3, Avx2.Shuffle(scales, Pick(6)).AsInt16(), Avx2.Shuffle(scales, Pick(7)).AsInt16());
            am = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(Totals(isum, mins)), DminD(ref blk) * xd[b], am);
        }
        return am.GetElement(0) - am.GetElement(1);
    }

    /// <summary>[I, M, I, M]: the exact totals of a super-block's eight scaled partial sums and four minimum sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<int> Totals(Vector256<int> isum, Vector128<int> mins)
    {
        Vector128<int> h = Ssse3.HorizontalAdd(isum.GetLower() + isum.GetUpper(), mins);
        return Ssse3.HorizontalAdd(h, h);
    }

    /// <summary>[d, dmin, d, dmin] of a block as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> DminD(ref BlockQ4K blk)
    {
        float[] h = HalfTable.Values;
        float d = h[blk.D], dmin = h[blk.DMin];
        return Vector128.Create(d, dmin, d, dmin);
    }

    /// <summary>Σ over group g's 64 weights of sc·q·x for its two sub-blocks, as eight int32 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ref byte qs, ref sbyte xb, int g, Vector256<short> s0, Vector256<short> s1)
    {
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        Vector256<byte> raw = Vector256.LoadUnsafe(ref qs, (nuint)(g * 32));
        Vector256<byte> q0 = raw & low, q1 = Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & low;
        // u4 × s8 pairs fit int16 (≤ 3810); the 6-bit sub-block scale is applied by the widening pair-add.
        return IntDots.AddPairs(IntDots.AddPairs(Vector256<int>.Zero, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64))), s0),
            Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64 + 32))), s1);
    }

    /// <summary>The eight 6-bit scales (int16 lanes 0..7) and minimums (lanes 8..15) of a block, unpacked with
    /// whole-word masks as ggml does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<short> ScalesAndMins(ref BlockQ4K blk)
    {
        ref byte scb = ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc);
        uint u0 = Unsafe.ReadUnaligned<uint>(ref scb), u1 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref scb, 4)), u2 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref scb, 8));
        Vector128<uint> packed = Vector128.Create(u0 & 0x3f3f3f3f, (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4),
            u1 & 0x3f3f3f3f, ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4));
        return Avx2.ConvertToVector256Int16(packed.AsByte());
    }

    /// <summary>A byte shuffle broadcasting int16 lane j of each 128-bit half to the whole half: bytes 2j, 2j + 1
    /// repeated. A constant for constant j (see the note on vector constants in BlockDots).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Pick(int j) => Vector256.Create((ushort)(2 * j | (2 * j + 1) << 8)).AsByte();

    /// <summary>Four tokens against one weight row: each super-block's scales, minimums and nibbles are unpacked once
    /// for all four; every token's result is bit-identical to <see cref="V256"/> on that token alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void V256x4(ReadOnlySpan<BlockQ4K> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> blockSum, int sumStride, Span<float> result)
    {
        ref sbyte x0 = ref MemoryMarshal.GetReference(xq);
        ref sbyte x1 = ref Unsafe.Add(ref x0, xStride), x2 = ref Unsafe.Add(ref x0, 2 * xStride), x3 = ref Unsafe.Add(ref x0, 3 * xStride);
        ref short bs = ref MemoryMarshal.GetReference(blockSum);
        Vector128<float> acc = Vector128<float>.Zero, accMin = acc; // lane k: token k
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ4K blk = ref Unsafe.AsRef(in w[b]);
            Vector256<short> lanes = ScalesAndMins(ref blk);
            Vector256<byte> scales = Avx2.Permute4x64(lanes.AsUInt64(), 0x44).AsByte();
            Vector128<short> mins = lanes.GetUpper();
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            nuint xo = (nuint)(b * 256);
            Vector256<int> i0 = Vector256<int>.Zero, i1 = i0, i2 = i0, i3 = i0;
            Vector256<short> s0 = Avx2.Shuffle(scales, Pick(0)).AsInt16(), s1 = Avx2.Shuffle(scales, Pick(1)).AsInt16();
            Quad(ref qs, 0, xo, ref x0, ref x1, ref x2, ref x3, s0, s1, ref i0, ref i1, ref i2, ref i3);
            s0 = Avx2.Shuffle(scales, Pick(2)).AsInt16(); s1 = Avx2.Shuffle(scales, Pick(3)).AsInt16();
            Quad(ref qs, 1, xo, ref x0, ref x1, ref x2, ref x3, s0, s1, ref i0, ref i1, ref i2, ref i3);
            s0 = Avx2.Shuffle(scales, Pick(4)).AsInt16(); s1 = Avx2.Shuffle(scales, Pick(5)).AsInt16();
            Quad(ref qs, 2, xo, ref x0, ref x1, ref x2, ref x3, s0, s1, ref i0, ref i1, ref i2, ref i3);
            s0 = Avx2.Shuffle(scales, Pick(6)).AsInt16(); s1 = Avx2.Shuffle(scales, Pick(7)).AsInt16();
            Quad(ref qs, 3, xo, ref x0, ref x1, ref x2, ref x3, s0, s1, ref i0, ref i1, ref i2, ref i3);
            float d = HalfTable.Values[blk.D], dmin = HalfTable.Values[blk.DMin];
            Vector128<float> dx = Vector128.Create(xd[b], xd[dStride + b], xd[2 * dStride + b], xd[3 * dStride + b]);
            Vector128<int> n0 = Sse2.MultiplyAddAdjacent(mins, Vector128.LoadUnsafe(ref bs, (nuint)(b * 8)));
            Vector128<int> n1 = Sse2.MultiplyAddAdjacent(mins, Vector128.LoadUnsafe(ref bs, (nuint)(sumStride + b * 8)));
            Vector128<int> n2 = Sse2.MultiplyAddAdjacent(mins, Vector128.LoadUnsafe(ref bs, (nuint)(2 * sumStride + b * 8)));
            Vector128<int> n3 = Sse2.MultiplyAddAdjacent(mins, Vector128.LoadUnsafe(ref bs, (nuint)(3 * sumStride + b * 8)));
            acc = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(Totals4(i0.GetLower() + i0.GetUpper(), i1.GetLower() + i1.GetUpper(),
                i2.GetLower() + i2.GetUpper(), i3.GetLower() + i3.GetUpper())), d * dx, acc);
            accMin = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(Totals4(n0, n1, n2, n3)), dmin * dx, accMin);
        }
        Vector128<float> r = acc - accMin;
        result[0] = r.GetElement(0);
        result[1] = r.GetElement(1);
        result[2] = r.GetElement(2);
        result[3] = r.GetElement(3);
    }

    /// <summary>[Σ t0, Σ t1, Σ t2, Σ t3] (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Totals4(Vector128<int> t0, Vector128<int> t1, Vector128<int> t2, Vector128<int> t3) =>
        Ssse3.HorizontalAdd(Ssse3.HorizontalAdd(t0, t1), Ssse3.HorizontalAdd(t2, t3));

    /// <summary>Group g (64 weights) for four tokens: nibbles unpacked once; adds into each token's integer sums in the
    /// order <see cref="Group"/> does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad(ref byte qs, int g, nuint xo, ref sbyte x0, ref sbyte x1, ref sbyte x2, ref sbyte x3,
        Vector256<short> s0, Vector256<short> s1, ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        Vector256<byte> low = Vector256.Create((byte)0x0F);
        Vector256<byte> raw = Vector256.LoadUnsafe(ref qs, (nuint)(g * 32));
        Vector256<byte> q0 = raw & low, q1 = Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & low;
        nuint o0 = xo + (nuint)(g * 64), o1 = o0 + 32;
        i0 = IntDots.AddPairs(IntDots.AddPairs(i0, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref x0, o0)), s0), Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref x0, o1)), s1);
        i1 = IntDots.AddPairs(IntDots.AddPairs(i1, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref x1, o0)), s0), Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref x1, o1)), s1);
        i2 = IntDots.AddPairs(IntDots.AddPairs(i2, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref x2, o0)), s0), Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref x2, o1)), s1);
        i3 = IntDots.AddPairs(IntDots.AddPairs(i3, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref x3, o0)), s0), Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref x3, o1)), s1);
    }
}

internal static class VectorReductions
{
    public static float ToScalarMin(this Vector256<float> v)
    {
        float m = v[0];
        for (int i = 1; i < Vector256<float>.Count; i++) m = MathF.Min(m, v[i]);
        return m;
    }

    public static float ToScalarMax(this Vector256<float> v)
    {
        float m = v[0];
        for (int i = 1; i < Vector256<float>.Count; i++) m = MathF.Max(m, v[i]);
        return m;
    }
}
