using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>A block format of 32 weights that starts with an fp16 scale and yields 32 signed codes (Q8_0, Q4_0,
/// Q5_0): all it takes for the shared integer kernels below.</summary>
internal interface IBlockCodes
{
    static abstract int Bytes { get; }

    /// <summary>The block's 32 codes as signed bytes, w = d · code.</summary>
    static abstract Vector256<sbyte> Codes(ref byte block);

    /// <summary>The block's codes 0–15 (<paramref name="low"/>) and 16–31 as signed bytes, in 128-bit registers
    /// through the portable <see cref="Vector128"/> operations (<see cref="BlockDots{T}.V128"/>).</summary>
    static abstract void Codes128(ref byte block, out Vector128<sbyte> low, out Vector128<sbyte> high);

    /// <summary>Code i of a block, one at a time: the specification <see cref="Codes"/> is tested against.</summary>
    static abstract int Code(ReadOnlySpan<byte> block, int i);

    /// <summary>What makes every code non-negative (Q4_0 8, Q5_0 16), or 0 for formats whose codes take the full
    /// signed byte range (Q8_0: those use the sign trick instead).</summary>
    static abstract int Offset { get; }

    /// <summary>The block's codes + <see cref="Offset"/> as unsigned bytes (formats with an offset).</summary>
    static abstract Vector256<byte> Unsigned(ref byte block);

    /// <summary>Two consecutive blocks' codes + <see cref="Offset"/> (formats with an offset): codes 0–15 of the block
    /// at <paramref name="block"/> then codes 0–15 of the next one in <paramref name="low"/>, codes 16–31 of both in
    /// <paramref name="high"/> — the halves a packed nibble layout yields without crossing 128-bit lanes.</summary>
    static abstract void UnsignedPair(ref byte block, out Vector256<byte> low, out Vector256<byte> high);
}

/// <summary>AVX2 dot products of rows of <typeparamref name="T"/> blocks against activations quantised per 32, one
/// token (<see cref="V256"/>) or four sharing each block's codes (<see cref="V256x4"/>, bit-identical per token).
/// Per block: exact int32 sums of |w| × sign-moved x (maddubs + maddwd) — or, for formats with small codes, of
/// (code + offset) × x minus offset × Σx, which needs no sign trick, two blocks per vector (<see cref="PairDot"/>);
/// eight blocks' sums gathered into one vector by a tree of unpacks and adds (<see cref="IntDots.Fold2"/>,
/// <see cref="IntDots.Fold4"/>), converted once and scaled by their eight
/// d_w·d_x. Blocks past the last whole eight are added
/// one by one. Either way the integer sums are exact, so the results are the same bits. Specialised per format by
/// the JIT (T is a struct).</summary>
internal static class BlockDots<T> where T : struct, IBlockCodes
{
    /// <summary>Σ w·x for a row of <paramref name="xd"/>.Length blocks, on the fastest path this CPU has.</summary>
    /// <param name="xsum">Σ codes of each activation block (<see cref="QuantizedActivations.BlockSum"/>); read only
    /// by formats with an <see cref="IBlockCodes.Offset"/></param>
    public static float Dot(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        if (w.Length != xd.Length * T.Bytes || xq.Length != xd.Length * 32) ThrowHelper.LengthMismatch(nameof(xq), xd.Length * 32, xq.Length);
        if (Avx2.IsSupported) return V256(ref MemoryMarshal.GetReference(w), xd.Length, xq, xd, xsum);
        return IntDots128.IsSupported ? V128(w, xq, xd) : Scalar(w, xq, xd);
    }

    /// <summary>The specification: an exact integer sum per block, scaled by d_w·d_x, summed in block order.</summary>
    public static float Scalar(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        float sum = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ReadOnlySpan<byte> blk = w.Slice(b * T.Bytes, T.Bytes);
            int isum = 0;
            for (int i = 0; i < 32; i++) isum += T.Code(blk, i) * xq[b * 32 + i];
            sum += HalfTable.Values[BitConverter.ToUInt16(blk)] * xd[b] * isum;
        }
        return sum;
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2): each block's integer sum with
    /// <see cref="IntDots128"/>, then <see cref="Scalar"/>'s float steps — the specification's bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        ref byte wr = ref MemoryMarshal.GetReference(w);
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        float sum = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ref byte blk = ref Unsafe.Add(ref wr, b * T.Bytes);
            T.Codes128(ref blk, out Vector128<sbyte> low, out Vector128<sbyte> high);
            int isum = IntDots128.Dot32(low, high, ref Unsafe.Add(ref xr, b * 32));
            sum += HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref blk)] * xd[b] * isum;
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float V256(ref byte wb, int n, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> xsum)
    {
        if (Bias != 0 && xsum.Length < n) ThrowHelper.TooShort(nameof(xsum), n, xsum.Length);
        ref sbyte xb = ref MemoryMarshal.GetReference(xq);
        ref float xs = ref MemoryMarshal.GetReference(xd);
        ref short xu = ref MemoryMarshal.GetReference(xsum);
        Vector256<float> acc = Vector256<float>.Zero;
        int b = 0;
        // Refs moved a group at a time, so every block's offset inside the group is a constant of its instruction.
        ref byte w = ref wb;
        ref sbyte x = ref xb;
        ref float d = ref xs;
        ref short u = ref xu;
        for (; b + 8 <= n; b += 8)
        {
            Vector256<float> ws = Scales8(ref w, 0);
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Sums8(ref w, ref x, ref u, 0)), ws * Vector256.LoadUnsafe(ref d), acc);
            w = ref Unsafe.Add(ref w, 8 * T.Bytes);
            x = ref Unsafe.Add(ref x, 256);
            d = ref Unsafe.Add(ref d, 8);
            u = ref Unsafe.Add(ref u, 8);
        }
        float sum = Reduce8(acc);
        if (b + 4 <= n)
        {
            sum = Add4(sum, ref wb, ref xb, ref xs, ref xu, b);
            b += 4;
        }
        for (; b < n; b++)
            sum += HalfTable.Values[ScaleBits(ref wb, b)] * Unsafe.Add(ref xs, b)
                   * BlockSum(ref wb, ref xb, ref xu, b);
        return sum;
    }

    /// <summary>Four tokens against one weight row (prefill): weight loads and |w| are shared; each token's result is
    /// bit-identical to <see cref="V256"/> on that token alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void V256x4(ref byte wb, int n, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result)
    {
        if (Bias != 0 && xsum.Length < 3 * dStride + n) ThrowHelper.TooShort(nameof(xsum), 3 * dStride + n, xsum.Length);
        ref short u0 = ref MemoryMarshal.GetReference(xsum);
        ref short u1 = ref Unsafe.Add(ref u0, dStride), u2 = ref Unsafe.Add(ref u0, 2 * dStride), u3 = ref Unsafe.Add(ref u0, 3 * dStride);
        ref sbyte x0 = ref MemoryMarshal.GetReference(xq);
        ref sbyte x1 = ref Unsafe.Add(ref x0, xStride), x2 = ref Unsafe.Add(ref x0, 2 * xStride), x3 = ref Unsafe.Add(ref x0, 3 * xStride);
        ref float s0 = ref MemoryMarshal.GetReference(xd);
        ref float s1 = ref Unsafe.Add(ref s0, dStride), s2 = ref Unsafe.Add(ref s0, 2 * dStride), s3 = ref Unsafe.Add(ref s0, 3 * dStride);
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int b = 0;
        for (; b + 8 <= n; b += 8)
        {
            // Weights and codes from refs at the group, so the blocks' offsets are constants (see V256).
            ref byte w = ref Unsafe.Add(ref wb, b * T.Bytes);
            Vector256<float> ws = Scales8(ref w, 0);
            Vector256<int> i0, i1, i2, i3;
            if (T.Offset == 0)
                Sums8x4(ref w, ref Unsafe.Add(ref x0, b * 32), ref Unsafe.Add(ref x1, b * 32), ref Unsafe.Add(ref x2, b * 32), ref Unsafe.Add(ref x3, b * 32), 0,
                    out i0, out i1, out i2, out i3);
            else
                PairSums8x4(ref w, ref Unsafe.Add(ref x0, b * 32), ref Unsafe.Add(ref x1, b * 32), ref Unsafe.Add(ref x2, b * 32), ref Unsafe.Add(ref x3, b * 32),
                    out i0, out i1, out i2, out i3);
            if (Bias != 0)
            {
                i0 -= OffsetSums8(ref u0, b);
                i1 -= OffsetSums8(ref u1, b);
                i2 -= OffsetSums8(ref u2, b);
                i3 -= OffsetSums8(ref u3, b);
            }
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), ws * Vector256.LoadUnsafe(ref s0, (nuint)b), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), ws * Vector256.LoadUnsafe(ref s1, (nuint)b), a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2), ws * Vector256.LoadUnsafe(ref s2, (nuint)b), a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3), ws * Vector256.LoadUnsafe(ref s3, (nuint)b), a3);
        }
        float r0 = Reduce8(a0), r1 = Reduce8(a1), r2 = Reduce8(a2), r3 = Reduce8(a3);
        for (; b < n; b++)
        {
            float d = HalfTable.Values[ScaleBits(ref wb, b)];
            r0 += d * Unsafe.Add(ref s0, b) * BlockSum(ref wb, ref x0, ref u0, b);
            r1 += d * Unsafe.Add(ref s1, b) * BlockSum(ref wb, ref x1, ref u1, b);
            r2 += d * Unsafe.Add(ref s2, b) * BlockSum(ref wb, ref x2, ref u2, b);
            r3 += d * Unsafe.Add(ref s3, b) * BlockSum(ref wb, ref x3, ref u3, b);
        }
        result[0] = r0; result[1] = r1; result[2] = r2; result[3] = r3;
    }

    /// <summary>Whether <see cref="V256Grouped"/> runs here: AVX-VNNI (unsigned × signed bytes without saturation)
    /// and signed codes (Q8_0).</summary>
    public static bool CanGroup => AvxVnni.IsSupported && T.Offset == 0;

    /// <summary>Two to four tokens against one weight row without a reduction per token: each whole group of eight
    /// blocks is transposed by four-byte groups once (24 shuffles shared by the tokens), so that against each token's
    /// grouped activations (<see cref="QuantizedActivations.GroupBlocks"/>) eight <c>vpdpbusd</c> leave every block's
    /// exact sum in its own lane — the vector <see cref="V256"/> builds with its per-token tree. Blocks past the
    /// whole groups as in <see cref="V256x4"/>, from the codes as they are (<paramref name="xq"/>). Same integers,
    /// same float steps: each token's result is bit-identical to <see cref="V256"/> on it alone.</summary>
    /// <param name="tokens">2, 3 or 4; token t's activations start t · <paramref name="xStride"/> (codes) and
    /// t · <paramref name="dStride"/> (scales, block sums) in</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void V256Grouped(ref byte wb, int n, int tokens, ReadOnlySpan<sbyte> xg, ReadOnlySpan<sbyte> xq, int xStride,
        ReadOnlySpan<float> xd, int dStride, ReadOnlySpan<short> xsum, Span<float> result)
    {
        if (!CanGroup) throw new PlatformNotSupportedException("grouped blocks need AVX-VNNI and signed codes");
        if (tokens is < 2 or > 4) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "between 2 and 4 tokens");
        int last = tokens - 1;
        if (xg.Length < last * xStride + n * 32 || xq.Length < last * xStride + n * 32)
            ThrowHelper.TooShort(nameof(xq), last * xStride + n * 32, Math.Min(xg.Length, xq.Length));
        if (xd.Length < last * dStride + n || xsum.Length < last * dStride + n) ThrowHelper.TooShort(nameof(xd), last * dStride + n, Math.Min(xd.Length, xsum.Length));
        if (result.Length < tokens) ThrowHelper.TooShort(nameof(result), tokens, result.Length);
        // Tokens past the last are read at token 0's place (never stored), so every ref points into the spans.
        int x2 = tokens > 2 ? 2 * xStride : 0, x3 = tokens > 3 ? 3 * xStride : 0, d2 = tokens > 2 ? 2 * dStride : 0, d3 = tokens > 3 ? 3 * dStride : 0;
        ref short u0 = ref MemoryMarshal.GetReference(xsum);
        ref short u1 = ref Unsafe.Add(ref u0, dStride), u2 = ref Unsafe.Add(ref u0, d2), u3 = ref Unsafe.Add(ref u0, d3);
        ref sbyte g0 = ref MemoryMarshal.GetReference(xg);
        ref sbyte g1 = ref Unsafe.Add(ref g0, xStride), g2 = ref Unsafe.Add(ref g0, x2), g3 = ref Unsafe.Add(ref g0, x3);
        ref float s0 = ref MemoryMarshal.GetReference(xd);
        ref float s1 = ref Unsafe.Add(ref s0, dStride), s2 = ref Unsafe.Add(ref s0, d2), s3 = ref Unsafe.Add(ref s0, d3);
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int b = 0;
        for (; b + 8 <= n; b += 8)
        {
            ref byte w = ref Unsafe.Add(ref wb, b * T.Bytes);
            // Lane j of c_q: block j's codes 4q..4q+3, + 128 as unsigned bytes.
            Vector256<int> k0 = GroupRow(ref w, 0), k1 = GroupRow(ref w, 1), k2 = GroupRow(ref w, 2), k3 = GroupRow(ref w, 3);
            Vector256<int> t0 = Avx2.UnpackLow(k0, k1), t1 = Avx2.UnpackHigh(k0, k1), t2 = Avx2.UnpackLow(k2, k3), t3 = Avx2.UnpackHigh(k2, k3);
            k0 = GroupRow(ref w, 4); k1 = GroupRow(ref w, 5); k2 = GroupRow(ref w, 6); k3 = GroupRow(ref w, 7);
            Vector256<int> t4 = Avx2.UnpackLow(k0, k1), t5 = Avx2.UnpackHigh(k0, k1), t6 = Avx2.UnpackLow(k2, k3), t7 = Avx2.UnpackHigh(k2, k3);
            Vector256<int> p0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()).AsInt32(), p1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64()).AsInt32();
            Vector256<int> p2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()).AsInt32(), p3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64()).AsInt32();
            Vector256<int> p4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()).AsInt32(), p5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64()).AsInt32();
            Vector256<int> p6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()).AsInt32(), p7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64()).AsInt32();
            Vector256<byte> c0 = Avx2.Permute2x128(p0, p4, 0x20).AsByte(), c4 = Avx2.Permute2x128(p0, p4, 0x31).AsByte();
            Vector256<byte> c1 = Avx2.Permute2x128(p1, p5, 0x20).AsByte(), c5 = Avx2.Permute2x128(p1, p5, 0x31).AsByte();
            Vector256<byte> c2 = Avx2.Permute2x128(p2, p6, 0x20).AsByte(), c6 = Avx2.Permute2x128(p2, p6, 0x31).AsByte();
            Vector256<byte> c3 = Avx2.Permute2x128(p3, p7, 0x20).AsByte(), c7 = Avx2.Permute2x128(p3, p7, 0x31).AsByte();
            Vector256<float> ws = Scales8(ref w, 0);
            a0 = GroupStep(a0, c0, c1, c2, c3, c4, c5, c6, c7, ref Unsafe.Add(ref g0, b * 32), ref u0, ref s0, b, ws);
            a1 = GroupStep(a1, c0, c1, c2, c3, c4, c5, c6, c7, ref Unsafe.Add(ref g1, b * 32), ref u1, ref s1, b, ws);
            if (tokens > 2)
            {
                a2 = GroupStep(a2, c0, c1, c2, c3, c4, c5, c6, c7, ref Unsafe.Add(ref g2, b * 32), ref u2, ref s2, b, ws);
                if (tokens > 3) a3 = GroupStep(a3, c0, c1, c2, c3, c4, c5, c6, c7, ref Unsafe.Add(ref g3, b * 32), ref u3, ref s3, b, ws);
            }
        }
        float r0 = Reduce8(a0), r1 = Reduce8(a1), r2 = Reduce8(a2), r3 = Reduce8(a3);
        ref sbyte q0 = ref MemoryMarshal.GetReference(xq);
        ref sbyte q1 = ref Unsafe.Add(ref q0, xStride), q2 = ref Unsafe.Add(ref q0, x2), q3 = ref Unsafe.Add(ref q0, x3);
        for (; b < n; b++)
        {
            float d = HalfTable.Values[ScaleBits(ref wb, b)];
            r0 += d * Unsafe.Add(ref s0, b) * BlockSum(ref wb, ref q0, ref u0, b);
            r1 += d * Unsafe.Add(ref s1, b) * BlockSum(ref wb, ref q1, ref u1, b);
            r2 += d * Unsafe.Add(ref s2, b) * BlockSum(ref wb, ref q2, ref u2, b);
            r3 += d * Unsafe.Add(ref s3, b) * BlockSum(ref wb, ref q3, ref u3, b);
        }
        result[0] = r0; result[1] = r1;
        if (tokens > 2) result[2] = r2;
        if (tokens > 3) result[3] = r3;
    }

    /// <summary>Block j of a group as code + 128 (unsigned bytes), as 32-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> GroupRow(ref byte w, int j) => (Codes(ref w, j) ^ Vector256.Create((sbyte)-128)).AsInt32();

    /// <summary>One token's step of <see cref="V256Grouped"/>: the eight blocks' exact sums (from −128 · Σx, two
    /// chains of four <c>vpdpbusd</c>), scaled and added to the lanes as <see cref="V256"/> adds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GroupStep(Vector256<float> acc, Vector256<byte> c0, Vector256<byte> c1, Vector256<byte> c2, Vector256<byte> c3,
        Vector256<byte> c4, Vector256<byte> c5, Vector256<byte> c6, Vector256<byte> c7, ref sbyte g, ref short u, ref float d, int b, Vector256<float> ws)
    {
        Vector256<int> e = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero - OffsetSums8(ref u, b), c0, Vector256.LoadUnsafe(ref g));
        Vector256<int> f = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, c4, Vector256.LoadUnsafe(ref g, 128));
        e = AvxVnni.MultiplyWideningAndAdd(e, c1, Vector256.LoadUnsafe(ref g, 32));
        f = AvxVnni.MultiplyWideningAndAdd(f, c5, Vector256.LoadUnsafe(ref g, 160));
        e = AvxVnni.MultiplyWideningAndAdd(e, c2, Vector256.LoadUnsafe(ref g, 64));
        f = AvxVnni.MultiplyWideningAndAdd(f, c6, Vector256.LoadUnsafe(ref g, 192));
        e = AvxVnni.MultiplyWideningAndAdd(e, c3, Vector256.LoadUnsafe(ref g, 96));
        f = AvxVnni.MultiplyWideningAndAdd(f, c7, Vector256.LoadUnsafe(ref g, 224));
        return Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e + f), ws * Vector256.LoadUnsafe(ref d, (nuint)b), acc);
    }

    /// <summary>Two tokens against one weight row (a decode step with a speculative draft): weight loads and |w| are
    /// shared; each token's result is bit-identical to <see cref="V256"/> on that token alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void V256x2(ref byte wb, int n, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> xsum, Span<float> result)
    {
        if (Bias != 0 && xsum.Length < dStride + n) ThrowHelper.TooShort(nameof(xsum), dStride + n, xsum.Length);
        ref short u0 = ref MemoryMarshal.GetReference(xsum);
        ref short u1 = ref Unsafe.Add(ref u0, dStride);
        ref sbyte x0 = ref MemoryMarshal.GetReference(xq);
        ref sbyte x1 = ref Unsafe.Add(ref x0, xStride);
        ref float s0 = ref MemoryMarshal.GetReference(xd);
        ref float s1 = ref Unsafe.Add(ref s0, dStride);
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0;
        int b = 0;
        for (; b + 8 <= n; b += 8)
        {
            ref byte w = ref Unsafe.Add(ref wb, b * T.Bytes);
            ref sbyte y0 = ref Unsafe.Add(ref x0, b * 32), y1 = ref Unsafe.Add(ref x1, b * 32);
            Vector256<float> ws = Scales8(ref w, 0);
            Vector256<int> i0, i1;
            if (T.Offset == 0)
            {
                Pair(ref w, ref y0, ref y1, 0, out Vector256<int> q0, out Vector256<int> q1);
                Pair(ref w, ref y0, ref y1, 4, out Vector256<int> r0, out Vector256<int> r1);
                i0 = Avx2.Permute2x128(q0, r0, 0x20) + Avx2.Permute2x128(q0, r0, 0x31);
                i1 = Avx2.Permute2x128(q1, r1, 0x20) + Avx2.Permute2x128(q1, r1, 0x31);
            }
            else PairSums8x2(ref w, ref y0, ref y1, out i0, out i1);
            if (Bias != 0)
            {
                i0 -= OffsetSums8(ref u0, b);
                i1 -= OffsetSums8(ref u1, b);
            }
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), ws * Vector256.LoadUnsafe(ref s0, (nuint)b), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), ws * Vector256.LoadUnsafe(ref s1, (nuint)b), a1);
        }
        float f0 = Reduce8(a0), f1 = Reduce8(a1);
        for (; b < n; b++)
        {
            float d = HalfTable.Values[ScaleBits(ref wb, b)];
            f0 += d * Unsafe.Add(ref s0, b) * BlockSum(ref wb, ref x0, ref u0, b);
            f1 += d * Unsafe.Add(ref s1, b) * BlockSum(ref wb, ref x1, ref u1, b);
        }
        result[0] = f0; result[1] = f1;
    }

    /// <summary><see cref="Quad"/> for two tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pair(ref byte wb, ref sbyte x0, ref sbyte x1, int b, out Vector256<int> q0, out Vector256<int> q1)
    {
        Vector256<byte> a = Weights(ref wb, b, out Vector256<sbyte> w);
        Vector256<int> e0 = Dot8(a, w, ref x0, b), e1 = Dot8(a, w, ref x1, b);
        a = Weights(ref wb, b + 1, out w);
        Vector256<int> h0 = IntDots.Fold2(e0, Dot8(a, w, ref x0, b + 1)), h1 = IntDots.Fold2(e1, Dot8(a, w, ref x1, b + 1));
        a = Weights(ref wb, b + 2, out w);
        e0 = Dot8(a, w, ref x0, b + 2);
        e1 = Dot8(a, w, ref x1, b + 2);
        a = Weights(ref wb, b + 3, out w);
        q0 = IntDots.Fold4(h0, IntDots.Fold2(e0, Dot8(a, w, ref x0, b + 3)));
        q1 = IntDots.Fold4(h1, IntDots.Fold2(e1, Dot8(a, w, ref x1, b + 3)));
    }

    /// <summary>The eight lanes added in a fixed order, ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), which
    /// <see cref="BlockGemm{T}"/> repeats across rows (Vector256.Sum's order is not specified).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Reduce8(Vector256<float> v)
    {
        Vector128<float> h = v.GetLower() + v.GetUpper();
        return (h.GetElement(0) + h.GetElement(2)) + (h.GetElement(1) + h.GetElement(3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Codes(ref byte wb, int b) => T.Codes(ref Unsafe.Add(ref wb, b * T.Bytes));

    // Vector constants of the quantised kernels (here and in the other Kernels/Quant files) are written in place
    // (Vector256.Create(…) of literals) or in [AggressiveInlining] helpers, never kept in static readonly fields or
    // behind plain properties: a method compiled straight to full optimisation (AggressiveOptimization) is compiled
    // before its classes are initialised, so a field read becomes a class-init check and a load in the loop, and a
    // large method runs out of inlining budget, leaving a plain getter as a call per block. Settings chosen per CPU at
    // start-up (static readonly, such as the look-ahead of the one-token tile kernels) are read once on entry into a
    // local, before any vector is live (Q4KTiles.OneLookAhead says what the read in the loop cost).

    /// <summary>What the kernels add to every code before multiplying, and take back as <c>Bias · Σx</c> per block:
    /// a format's <see cref="IBlockCodes.Offset"/>, or 128 for the sign-trick formats (Q8_0) where the CPU has
    /// AVX-VNNI. There <c>code ^ 0x80</c> is code + 128 as an unsigned byte, and <c>vpdpbusd</c> multiplies it by x
    /// without the 16-bit saturation of <c>vpmaddubsw</c> (255 · 127 · 2 would overflow it), so a block takes one xor
    /// and one multiply-add instead of abs, sign and the multiply-add. Integer sums are the same either way.
    /// 0 otherwise (the sign trick). A constant to the JIT.</summary>
    private static int Bias
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => T.Offset != 0 ? T.Offset : AvxVnni.IsSupported ? 128 : 0;
    }

    /// <summary>Eight lanes whose sum is block b's exact Σ (w + <see cref="Bias"/>)·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockDot(ref byte wb, ref sbyte xb, int b)
    {
        Vector256<sbyte> x = Vector256.LoadUnsafe(ref xb, (nuint)(b * 32));
        if (T.Offset != 0)
            return IntDots.Bytes4(T.Unsigned(ref Unsafe.Add(ref wb, b * T.Bytes)), x);
        return Dot8(Weights(ref wb, b, out Vector256<sbyte> wq), wq, ref xb, b);
    }

    /// <summary>Blocks b..b+3 added to <paramref name="sum"/> one at a time, exactly as the one-block loop adds them,
    /// with their four integer sums taken from one reduction tree instead of four full reductions (rows of four
    /// blocks, MLA's 128-wide W_UK rows, ran entirely in the one-block loop).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Add4(float sum, ref byte wb, ref sbyte xb, ref float xs, ref short xu, int b)
    {
        Vector256<int> q = IntDots.Fold4(IntDots.Fold2(BlockDot(ref wb, ref xb, b), BlockDot(ref wb, ref xb, b + 1)),
            IntDots.Fold2(BlockDot(ref wb, ref xb, b + 2), BlockDot(ref wb, ref xb, b + 3)));
        Vector128<int> s = q.GetLower() + q.GetUpper();
        if (Bias != 0)
            s -= Sse41.ConvertToVector128Int32(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.As<short, byte>(ref Unsafe.Add(ref xu, b)))).AsInt16()) * Bias;
        ushort h0 = ScaleBits(ref wb, b), h1 = ScaleBits(ref wb, b + 1), h2 = ScaleBits(ref wb, b + 2), h3 = ScaleBits(ref wb, b + 3);
        Vector128<float> d = HalfTable.ToSingle(Vector128.Create(h0, h1, h2, h3, 0, 0, 0, 0)).GetLower();
        sum += d.GetElement(0) * Unsafe.Add(ref xs, b) * s.GetElement(0);
        sum += d.GetElement(1) * Unsafe.Add(ref xs, b + 1) * s.GetElement(1);
        sum += d.GetElement(2) * Unsafe.Add(ref xs, b + 2) * s.GetElement(2);
        sum += d.GetElement(3) * Unsafe.Add(ref xs, b + 3) * s.GetElement(3);
        return sum;
    }

    /// <summary>Block b's exact Σ w·x as one integer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BlockSum(ref byte wb, ref sbyte xb, ref short xu, int b) =>
        Vector256.Sum(BlockDot(ref wb, ref xb, b)) - (Bias != 0 ? Bias * Unsafe.Add(ref xu, b) : 0);

    /// <summary><see cref="Bias"/> × Σx of blocks b..b+7, to take from the biased codes' sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> OffsetSums8(ref short xu, int b)
    {
        Vector256<int> sums = Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref xu, (nuint)b));
        return Bias == 128 ? Avx2.ShiftLeftLogical(sums, 7) : sums * Bias;
    }

    /// <summary>Block b against one token: w + 128 by x (<see cref="Bias"/>), else |w| × sign-moved x (the
    /// sign-trick formats; offset formats take <see cref="PairDot8"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot8(Vector256<byte> aw, Vector256<sbyte> wq, ref sbyte xb, int b)
    {
        Vector256<sbyte> x = Vector256.LoadUnsafe(ref xb, (nuint)(b * 32));
        return IntDots.Bytes4(aw, Bias != 0 ? x : Avx2.Sign(x, wq));
    }

    /// <summary>What <see cref="Dot8"/> multiplies: w + 128 where <see cref="Bias"/> is 128, else |w|; and w in
    /// <paramref name="wq"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Weights(ref byte wb, int b, out Vector256<sbyte> wq)
    {
        wq = Codes(ref wb, b);
        return Bias != 0 ? (wq ^ Vector256.Create((sbyte)-128)).AsByte() : Avx2.Abs(wq);
    }

    /// <summary>[Σ block b, …, Σ block b+7] from eight per-block lane vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Tree(Vector256<int> d0, Vector256<int> d1, Vector256<int> d2, Vector256<int> d3,
        Vector256<int> d4, Vector256<int> d5, Vector256<int> d6, Vector256<int> d7)
    {
        Vector256<int> s0123 = IntDots.Fold4(IntDots.Fold2(d0, d1), IntDots.Fold2(d2, d3));
        Vector256<int> s4567 = IntDots.Fold4(IntDots.Fold2(d4, d5), IntDots.Fold2(d6, d7));
        return Avx2.Permute2x128(s0123, s4567, 0x20) + Avx2.Permute2x128(s0123, s4567, 0x31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Sums8(ref byte wb, ref sbyte xb, ref short xu, int b)
    {
        if (T.Offset != 0) return PairTree(ref wb, ref xb, b) - OffsetSums8(ref xu, b);
        Vector256<int> s = Tree(BlockDot(ref wb, ref xb, b), BlockDot(ref wb, ref xb, b + 1), BlockDot(ref wb, ref xb, b + 2), BlockDot(ref wb, ref xb, b + 3),
            BlockDot(ref wb, ref xb, b + 4), BlockDot(ref wb, ref xb, b + 5), BlockDot(ref wb, ref xb, b + 6), BlockDot(ref wb, ref xb, b + 7));
        return Bias != 0 ? s - OffsetSums8(ref xu, b) : s;
    }

    /// <summary>Blocks b and b + 1 of an offset format in one vector: lanes 0–3 add up to block b's Σ (code + offset)·x,
    /// lanes 4–7 to block b + 1's. The activations' 16-byte quarters are swapped into the codes' order
    /// (<see cref="IBlockCodes.UnsignedPair"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairDot(ref byte wb, ref sbyte xb, int b)
    {
        T.UnsignedPair(ref Unsafe.Add(ref wb, b * T.Bytes), out Vector256<byte> low, out Vector256<byte> high);
        return PairDot8(low, high, ref xb, b);
    }

    /// <summary>PairDot for one token against codes already unpacked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairDot8(Vector256<byte> low, Vector256<byte> high, ref sbyte xb, int b)
    {
        Vector256<sbyte> x0 = Vector256.LoadUnsafe(ref xb, (nuint)(b * 32)), x1 = Vector256.LoadUnsafe(ref xb, (nuint)(b * 32 + 32));
        return IntDots.AddBytes4(IntDots.Bytes4(low, Avx2.Permute2x128(x0, x1, 0x20)), high, Avx2.Permute2x128(x0, x1, 0x31));
    }

    /// <summary>[Σ block 0, …, Σ block 7] of an offset format for four tokens (<see cref="PairTree"/> per token, each
    /// pair of blocks unpacked once for all four).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairSums8x4(ref byte wb, ref sbyte x0, ref sbyte x1, ref sbyte x2, ref sbyte x3,
        out Vector256<int> i0, out Vector256<int> i1, out Vector256<int> i2, out Vector256<int> i3)
    {
        PairQuarter4(ref wb, ref x0, ref x1, ref x2, ref x3, 0, out Vector256<int> a0, out Vector256<int> a1, out Vector256<int> a2, out Vector256<int> a3);
        PairQuarter4(ref wb, ref x0, ref x1, ref x2, ref x3, 4, out Vector256<int> c0, out Vector256<int> c1, out Vector256<int> c2, out Vector256<int> c3);
        i0 = InBlockOrder(IntDots.Fold4(a0, c0));
        i1 = InBlockOrder(IntDots.Fold4(a1, c1));
        i2 = InBlockOrder(IntDots.Fold4(a2, c2));
        i3 = InBlockOrder(IntDots.Fold4(a3, c3));
    }

    /// <summary>The first level of <see cref="PairTree"/> (blocks b..b+3) for four tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairQuarter4(ref byte wb, ref sbyte x0, ref sbyte x1, ref sbyte x2, ref sbyte x3, int b,
        out Vector256<int> h0, out Vector256<int> h1, out Vector256<int> h2, out Vector256<int> h3)
    {
        T.UnsignedPair(ref Unsafe.Add(ref wb, b * T.Bytes), out Vector256<byte> low, out Vector256<byte> high);
        Vector256<int> e0 = PairDot8(low, high, ref x0, b), e1 = PairDot8(low, high, ref x1, b);
        Vector256<int> e2 = PairDot8(low, high, ref x2, b), e3 = PairDot8(low, high, ref x3, b);
        T.UnsignedPair(ref Unsafe.Add(ref wb, (b + 2) * T.Bytes), out low, out high);
        h0 = IntDots.Fold2(e0, PairDot8(low, high, ref x0, b + 2));
        h1 = IntDots.Fold2(e1, PairDot8(low, high, ref x1, b + 2));
        h2 = IntDots.Fold2(e2, PairDot8(low, high, ref x2, b + 2));
        h3 = IntDots.Fold2(e3, PairDot8(low, high, ref x3, b + 2));
    }

    /// <summary><see cref="PairSums8x4"/> for two tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairSums8x2(ref byte wb, ref sbyte x0, ref sbyte x1, out Vector256<int> i0, out Vector256<int> i1)
    {
        PairQuarter2(ref wb, ref x0, ref x1, 0, out Vector256<int> a0, out Vector256<int> a1);
        PairQuarter2(ref wb, ref x0, ref x1, 4, out Vector256<int> c0, out Vector256<int> c1);
        i0 = InBlockOrder(IntDots.Fold4(a0, c0));
        i1 = InBlockOrder(IntDots.Fold4(a1, c1));
    }

    /// <summary><see cref="PairQuarter4"/> for two tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairQuarter2(ref byte wb, ref sbyte x0, ref sbyte x1, int b, out Vector256<int> h0, out Vector256<int> h1)
    {
        T.UnsignedPair(ref Unsafe.Add(ref wb, b * T.Bytes), out Vector256<byte> low, out Vector256<byte> high);
        Vector256<int> e0 = PairDot8(low, high, ref x0, b), e1 = PairDot8(low, high, ref x1, b);
        T.UnsignedPair(ref Unsafe.Add(ref wb, (b + 2) * T.Bytes), out low, out high);
        h0 = IntDots.Fold2(e0, PairDot8(low, high, ref x0, b + 2));
        h1 = IntDots.Fold2(e1, PairDot8(low, high, ref x1, b + 2));
    }

    /// <summary>[Σ block b, …, Σ block b+7] (offset codes, before the offset's correction) from four
    /// <see cref="PairDot"/>s: two levels of folds leave blocks b, b+2, b+4, b+6 in the low lane and the odd
    /// ones in the high, which one permutation puts in order. Exact integers, so the same sums as <see cref="Tree"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairTree(ref byte wb, ref sbyte xb, int b)
    {
        Vector256<int> s = IntDots.Fold4(IntDots.Fold2(PairDot(ref wb, ref xb, b), PairDot(ref wb, ref xb, b + 2)),
            IntDots.Fold2(PairDot(ref wb, ref xb, b + 4), PairDot(ref wb, ref xb, b + 6)));
        return InBlockOrder(s);
    }

    /// <summary>[b0, b2, b4, b6 | b1, b3, b5, b7], as two levels of folds over pair vectors leave them, put
    /// in block order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> InBlockOrder(Vector256<int> s) => Avx2.PermuteVar8x32(s, Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7));

    /// <summary>For each of four tokens, [Σ block b, Σ b+1, …] summed as <see cref="Tree"/> does, for blocks b..b+7.
    /// The pair sums are folded as soon as both halves exist, so at most a dozen vectors are live (keeping the
    /// 32 block results until the end made the JIT spill them and call this out of line).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Sums8x4(ref byte wb, ref sbyte x0, ref sbyte x1, ref sbyte x2, ref sbyte x3, int b,
        out Vector256<int> i0, out Vector256<int> i1, out Vector256<int> i2, out Vector256<int> i3)
    {
        Quad(ref wb, ref x0, ref x1, ref x2, ref x3, b, out Vector256<int> q0, out Vector256<int> q1, out Vector256<int> q2, out Vector256<int> q3);
        Quad(ref wb, ref x0, ref x1, ref x2, ref x3, b + 4, out Vector256<int> r0, out Vector256<int> r1, out Vector256<int> r2, out Vector256<int> r3);
        i0 = Avx2.Permute2x128(q0, r0, 0x20) + Avx2.Permute2x128(q0, r0, 0x31);
        i1 = Avx2.Permute2x128(q1, r1, 0x20) + Avx2.Permute2x128(q1, r1, 0x31);
        i2 = Avx2.Permute2x128(q2, r2, 0x20) + Avx2.Permute2x128(q2, r2, 0x31);
        i3 = Avx2.Permute2x128(q3, r3, 0x20) + Avx2.Permute2x128(q3, r3, 0x31);
    }

    /// <summary>Fold4(Fold2(d_b, d_b+1), Fold2(d_b+2, d_b+3)) for each of four tokens (the first levels of
    /// <see cref="Tree"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad(ref byte wb, ref sbyte x0, ref sbyte x1, ref sbyte x2, ref sbyte x3, int b,
        out Vector256<int> q0, out Vector256<int> q1, out Vector256<int> q2, out Vector256<int> q3)
    {
        Vector256<byte> a = Weights(ref wb, b, out Vector256<sbyte> w);
        Vector256<int> e0 = Dot8(a, w, ref x0, b), e1 = Dot8(a, w, ref x1, b), e2 = Dot8(a, w, ref x2, b), e3 = Dot8(a, w, ref x3, b);
        a = Weights(ref wb, b + 1, out w);
        Vector256<int> h0 = IntDots.Fold2(e0, Dot8(a, w, ref x0, b + 1)), h1 = IntDots.Fold2(e1, Dot8(a, w, ref x1, b + 1));
        Vector256<int> h2 = IntDots.Fold2(e2, Dot8(a, w, ref x2, b + 1)), h3 = IntDots.Fold2(e3, Dot8(a, w, ref x3, b + 1));
        a = Weights(ref wb, b + 2, out w);
        e0 = Dot8(a, w, ref x0, b + 2); e1 = Dot8(a, w, ref x1, b + 2); e2 = Dot8(a, w, ref x2, b + 2); e3 = Dot8(a, w, ref x3, b + 2);
        a = Weights(ref wb, b + 3, out w);
        q0 = IntDots.Fold4(h0, IntDots.Fold2(e0, Dot8(a, w, ref x0, b + 3)));
        q1 = IntDots.Fold4(h1, IntDots.Fold2(e1, Dot8(a, w, ref x1, b + 3)));
        q2 = IntDots.Fold4(h2, IntDots.Fold2(e2, Dot8(a, w, ref x2, b + 3)));
        q3 = IntDots.Fold4(h3, IntDots.Fold2(e3, Dot8(a, w, ref x3, b + 3)));
    }

    /// <summary>Block b's fp16 scale d, as stored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort ScaleBits(ref byte wb, int b) => Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref wb, b * T.Bytes));

    /// <summary>d of blocks b..b+7 as floats: gathered four to a 64-bit integer (scalar loads, shifts and ors use ports
    /// the vector work leaves idle; eight <c>vpinsrw</c> cost a tenth of the one-token kernel in cache, a
    /// <c>vpgatherdd</c> more), then converted in registers (<see cref="HalfTable.ToSingle(Vector128{ushort})"/>: the
    /// table's values without a table line per distinct scale competing with the weights for L1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Scales8(ref byte wb, int b)
    {
        ulong lo = ScaleBits(ref wb, b) | (ulong)ScaleBits(ref wb, b + 1) << 16 | (ulong)ScaleBits(ref wb, b + 2) << 32 | (ulong)ScaleBits(ref wb, b + 3) << 48;
        ulong hi = ScaleBits(ref wb, b + 4) | (ulong)ScaleBits(ref wb, b + 5) << 16 | (ulong)ScaleBits(ref wb, b + 6) << 32 | (ulong)ScaleBits(ref wb, b + 7) << 48;
        return HalfTable.ToSingle(Vector128.Create(lo, hi).AsUInt16());
    }
}
