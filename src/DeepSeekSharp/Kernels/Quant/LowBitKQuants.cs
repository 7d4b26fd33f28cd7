using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q2_K and Q3_K products against activations quantised per 256 (ggml's Q8_K), in GGUF's layout (see
/// <see cref="KQuants"/>): sixteen sub-blocks of 16 weights, and 2-bit codes of which byte l of each 32-byte group holds
/// four weights 32 apart. Per super-block the integer sums are exact:
/// <list type="bullet">
/// <item>Q2_K: I = Σ_j sc_j · Σ q·x and M = Σ_j m_j · Σx_j (sixteen 4-bit scales and minimums); A = fma(I, d·dx, A),
/// B = fma(M, dmin·dx, B) in block order; the result is A − B (Q4_K's steps).</item>
/// <item>Q3_K: I = Σ_j s_j · Σ (q − 4)·x with q = two low bits | the high-mask bit · 4 (0..7) and s_j the 6-bit scale
/// − 32; A = fma(I, d·dx, A) in block order.</item>
/// </list>
/// The AVX2 kernels take u2 / u3 codes × s8 pair sums (maddubs), each sub-block's scale applied by the widening
/// pair-add, and the terms in Σx_j (Q2_K's minimums, Q3_K's − 4) from the activations' sums per 16
/// (<see cref="QuantizedActivations.Sums16"/>): the specification's integers, so its bits.</summary>
public static class LowBitKQuants
{
    public const int Q2KBytes = 84, Q3KBytes = 110;

    /// <summary>2-bit code of weight <paramref name="i"/> (0..255) from a block's 64 code bytes.</summary>
    internal static int Code2(ReadOnlySpan<byte> qs, int i) => (qs[i / 128 * 32 + i % 32] >> (2 * (i % 128 / 32))) & 3;

    /// <summary>Q3_K's code of weight <paramref name="i"/>, 0..7 (the value is it − 4).</summary>
    internal static int Q3Code(ReadOnlySpan<byte> blk, int i) =>
        Code2(blk.Slice(32, 64), i) | ((blk[i % 32] >> (i / 32)) & 1) << 2;

    /// <summary>Σ w·x of a Q2_K row against activations quantised per 256.</summary>
    public static float DotQ2K(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        Check(w, Q2KBytes, xq, xd, sums16);
        if (Avx2.IsSupported) return Q2KV256(w, xq, xd, sums16);
        return IntDots128.IsSupported ? Q2KV128(w, xq, xd, sums16) : Q2KScalar(w, xq, xd, sums16);
    }

    /// <summary>Σ w·x of a Q3_K row against activations quantised per 256.</summary>
    public static float DotQ3K(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        Check(w, Q3KBytes, xq, xd, sums16);
        if (Avx2.IsSupported) return Q3KV256(w, xq, xd, sums16);
        return IntDots128.IsSupported ? Q3KV128(w, xq, xd) : Q3KScalar(w, xq, xd);
    }

    private static void Check(ReadOnlySpan<byte> w, int blockBytes, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        int n = xd.Length;
        if (w.Length != n * blockBytes || xq.Length != n * 256) ThrowHelper.LengthMismatch(nameof(xq), n * 256, xq.Length);
        if (sums16.Length < n * 16) ThrowHelper.TooShort(nameof(sums16), n * 16, sums16.Length);
    }

    /// <summary>Q2_K's specification (see the class); <paramref name="sums16"/> are Σx per 16 of the codes.</summary>
    internal static float Q2KScalar(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        float a = 0, m = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ReadOnlySpan<byte> blk = w.Slice(b * Q2KBytes, Q2KBytes);
            int isum = 0, msum = 0;
            for (int j = 0; j < 16; j++)
            {
                int dot = 0;
                for (int i = 16 * j; i < 16 * j + 16; i++) dot += Code2(blk.Slice(16, 64), i) * xq[b * 256 + i];
                isum += (blk[j] & 0xF) * dot;
                msum += (blk[j] >> 4) * sums16[b * 16 + j];
            }
            a = MathF.FusedMultiplyAdd(isum, KQuants.Half(blk, 80) * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, KQuants.Half(blk, 82) * xd[b], m);
        }
        return a - m;
    }

    /// <summary>Q3_K's specification (see the class).</summary>
    internal static float Q3KScalar(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ReadOnlySpan<byte> blk = w.Slice(b * Q3KBytes, Q3KBytes);
            int isum = 0;
            for (int j = 0; j < 16; j++)
            {
                int dot = 0;
                for (int i = 16 * j; i < 16 * j + 16; i++) dot += (Q3Code(blk, i) - 4) * xq[b * 256 + i];
                isum += KQuants.Q3Scale(blk.Slice(96, 12), j) * dot;
            }
            a = MathF.FusedMultiplyAdd(isum, KQuants.Half(blk, 108) * xd[b], a);
        }
        return a;
    }

    /// <summary>Sub-block <paramref name="j"/>'s sixteen 2-bit codes from a block's 64 code bytes at
    /// <paramref name="qs"/>: bytes 32·(j / 8) + 16·(j mod 2) .., shifted by 2·((j mod 8) / 2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> Codes2(ref byte qs, int j) =>
        Vector128.ShiftRightLogical(Vector128.LoadUnsafe(ref qs, (nuint)(32 * (j / 8) + 16 * (j % 2))), 2 * (j % 8 / 2)) & Vector128.Create((byte)3);

    /// <summary>128-bit Q2_K (ARM64, or x86 without AVX2): each sub-block's exact Σ q·x times its scale in the lanes,
    /// the minimums' term from the sums per 16, then the specification's fused steps — its bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Q2KV128(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        ref byte wb = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        float a = 0, m = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ref byte blk = ref Unsafe.Add(ref wb, b * Q2KBytes);
            ref byte qs = ref Unsafe.Add(ref blk, 16);
            Vector128<int> acc = Vector128<int>.Zero;
            int msum = 0;
            for (int j = 0; j < 16; j++)
            {
                int sm = Unsafe.Add(ref blk, j);
                acc += IntDots128.Add(Vector128<int>.Zero, Codes2(ref qs, j).AsSByte(), Vector128.LoadUnsafe(ref x, (nuint)(b * 256 + 16 * j))) * (sm & 0xF);
                msum += (sm >> 4) * sums16[b * 16 + j];
            }
            ReadOnlySpan<byte> block = w.Slice(b * Q2KBytes, Q2KBytes);
            a = MathF.FusedMultiplyAdd(Vector128.Sum(acc), KQuants.Half(block, 80) * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, KQuants.Half(block, 82) * xd[b], m);
        }
        return a - m;
    }

    /// <summary>128-bit Q3_K: each sub-block's codes (two low bits | the high-mask bit · 4) less 4, exact Σ (q − 4)·x
    /// times its scale in the lanes, then the specification's fused step — its bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Q3KV128(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd)
    {
        ref byte wb = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            ref byte blk = ref Unsafe.Add(ref wb, b * Q3KBytes);
            ReadOnlySpan<byte> block = w.Slice(b * Q3KBytes, Q3KBytes);
            Vector128<int> acc = Vector128<int>.Zero;
            for (int j = 0; j < 16; j++)
            {
                // Weight i's high bit is bit i / 32 of byte i mod 32: for sub-block j, bit j / 2 of bytes 16·(j mod 2) ...
                Vector128<byte> high = Vector128.ShiftRightLogical(Vector128.LoadUnsafe(ref blk, (nuint)(16 * (j % 2))), j / 2) & Vector128.Create((byte)1);
                Vector128<sbyte> codes = (Codes2(ref Unsafe.Add(ref blk, 32), j) | Vector128.ShiftLeft(high, 2)).AsSByte() - Vector128.Create((sbyte)4);
                acc += IntDots128.Add(Vector128<int>.Zero, codes, Vector128.LoadUnsafe(ref x, (nuint)(b * 256 + 16 * j))) * KQuants.Q3Scale(block.Slice(96, 12), j);
            }
            a = MathF.FusedMultiplyAdd(Vector128.Sum(acc), KQuants.Half(block, 108) * xd[b], a);
        }
        return a;
    }

    /// <summary>AVX2 Q2_K: per 32-weight chunk the 2-bit codes by a shift and a mask, pair sums against the
    /// activations, the chunk's two sub-block scales applied by the widening pair-add; the minimums' term by one
    /// pair-add of the sixteen minimums with the sums per 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Q2KV256(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        ref byte blk = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref short xs = ref MemoryMarshal.GetReference(sums16);
        Vector128<float> am = Vector128<float>.Zero; // lane 0: Σ fma(I, d·dx); lane 1: Σ fma(M, dmin·dx)
        for (int b = 0; b < xd.Length; b++)
        {
            Q2KHeader(ref blk, out Vector256<short> scales, out Vector256<short> mins, out Vector128<float> dd);
            Vector256<int> isum = Vector256<int>.Zero, none = isum;
            Chunks(ref Unsafe.Add(ref blk, 16), ref blk, fifth: false, scales, 1, ref x, 0, ref isum, ref none, ref none, ref none);
            am = Q2KStep(am, isum, mins, ref xs, dd, xd[b]);
            blk = ref Unsafe.Add(ref blk, Q2KBytes);
            x = ref Unsafe.Add(ref x, 256);
            xs = ref Unsafe.Add(ref xs, 16);
        }
        return am.GetElement(0) - am.GetElement(1);
    }

    /// <summary>Four tokens against one Q2_K row (a prompt), token t's activations <paramref name="xStride"/> codes,
    /// <paramref name="dStride"/> scales and <paramref name="sStride"/> sums per 16 after token t − 1's: each chunk's
    /// codes and scales made once for the four; every token gets <see cref="Q2KV256"/>'s integers and float steps, so
    /// its bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Q2KV256x4(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> sums16, int sStride, Span<float> result)
    {
        int n = w.Length / Q2KBytes;
        CheckFour(n, xq, xStride, xd, dStride, sums16, sStride, result);
        ref byte blk = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref short xs = ref MemoryMarshal.GetReference(sums16);
        Vector128<float> a0 = Vector128<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        for (int b = 0; b < n; b++)
        {
            Q2KHeader(ref blk, out Vector256<short> scales, out Vector256<short> mins, out Vector128<float> dd);
            Vector256<int> i0 = Vector256<int>.Zero, i1 = i0, i2 = i0, i3 = i0;
            Chunks(ref Unsafe.Add(ref blk, 16), ref blk, fifth: false, scales, 4, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
            a0 = Q2KStep(a0, i0, mins, ref xs, dd, xd[b]);
            a1 = Q2KStep(a1, i1, mins, ref Unsafe.Add(ref xs, sStride), dd, xd[dStride + b]);
            a2 = Q2KStep(a2, i2, mins, ref Unsafe.Add(ref xs, 2 * sStride), dd, xd[2 * dStride + b]);
            a3 = Q2KStep(a3, i3, mins, ref Unsafe.Add(ref xs, 3 * sStride), dd, xd[3 * dStride + b]);
            blk = ref Unsafe.Add(ref blk, Q2KBytes);
            x = ref Unsafe.Add(ref x, 256);
            xs = ref Unsafe.Add(ref xs, 16);
        }
        result[0] = a0.GetElement(0) - a0.GetElement(1);
        result[1] = a1.GetElement(0) - a1.GetElement(1);
        result[2] = a2.GetElement(0) - a2.GetElement(1);
        result[3] = a3.GetElement(0) - a3.GetElement(1);
    }

    /// <summary>A Q2_K block's sixteen scales and minimums as int16 lanes, and [d, dmin, d, dmin].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q2KHeader(ref byte blk, out Vector256<short> scales, out Vector256<short> mins, out Vector128<float> dd)
    {
        Vector128<byte> packed = Vector128.LoadUnsafe(ref blk);
        scales = Avx2.ConvertToVector256Int16(packed & Vector128.Create((byte)0x0F));
        mins = Avx2.ConvertToVector256Int16(Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
        float d = HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 80))];
        float dmin = HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 82))];
        dd = Vector128.Create(d, dmin, d, dmin);
    }

    /// <summary>One token's fused steps for a Q2_K block: [fma(I, d·dx), fma(M, dmin·dx)] into <paramref name="am"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Q2KStep(Vector128<float> am, Vector256<int> isum, Vector256<short> mins, ref short xs, Vector128<float> dd, float dx) =>
        Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(Totals(isum, Avx2.MultiplyAddAdjacent(mins, Vector256.LoadUnsafe(ref xs)))), dd * dx, am);

    /// <summary>AVX2 Q3_K: as <see cref="Q2KV256"/> with each code's third bit from the high mask (codes 0..7), the
    /// sixteen scales unpacked in registers as ggml does, and 4 · Σ_j s_j · Σx_j taken off once per block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Q3KV256(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> sums16)
    {
        ref byte blk = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref short xs = ref MemoryMarshal.GetReference(sums16);
        float a = 0;
        for (int b = 0; b < xd.Length; b++)
        {
            Vector256<short> scales = Q3KScales(ref blk);
            Vector256<int> isum = Vector256<int>.Zero, none = isum;
            Chunks(ref Unsafe.Add(ref blk, 32), ref blk, fifth: true, scales, 1, ref x, 0, ref isum, ref none, ref none, ref none);
            a = Q3KStep(a, isum, scales, ref xs, Q3KD(ref blk), xd[b]);
            blk = ref Unsafe.Add(ref blk, Q3KBytes);
            x = ref Unsafe.Add(ref x, 256);
            xs = ref Unsafe.Add(ref xs, 16);
        }
        return a;
    }

    /// <summary>Four tokens against one Q3_K row, as <see cref="Q2KV256x4"/> is to <see cref="Q2KV256"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Q3KV256x4(ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> sums16, int sStride, Span<float> result)
    {
        int n = w.Length / Q3KBytes;
        CheckFour(n, xq, xStride, xd, dStride, sums16, sStride, result);
        ref byte blk = ref MemoryMarshal.GetReference(w);
        ref sbyte x = ref MemoryMarshal.GetReference(xq);
        ref short xs = ref MemoryMarshal.GetReference(sums16);
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int b = 0; b < n; b++)
        {
            Vector256<short> scales = Q3KScales(ref blk);
            Vector256<int> i0 = Vector256<int>.Zero, i1 = i0, i2 = i0, i3 = i0;
            Chunks(ref Unsafe.Add(ref blk, 32), ref blk, fifth: true, scales, 4, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
            float d = Q3KD(ref blk);
            a0 = Q3KStep(a0, i0, scales, ref xs, d, xd[b]);
            a1 = Q3KStep(a1, i1, scales, ref Unsafe.Add(ref xs, sStride), d, xd[dStride + b]);
            a2 = Q3KStep(a2, i2, scales, ref Unsafe.Add(ref xs, 2 * sStride), d, xd[2 * dStride + b]);
            a3 = Q3KStep(a3, i3, scales, ref Unsafe.Add(ref xs, 3 * sStride), d, xd[3 * dStride + b]);
            blk = ref Unsafe.Add(ref blk, Q3KBytes);
            x = ref Unsafe.Add(ref x, 256);
            xs = ref Unsafe.Add(ref xs, 16);
        }
        result[0] = a0;
        result[1] = a1;
        result[2] = a2;
        result[3] = a3;
    }

    /// <summary>A Q3_K block's sixteen scales − 32 as int16 lanes (ggml's kmask unpacking, in registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Q3KScales(ref byte blk)
    {
        ref byte sc = ref Unsafe.Add(ref blk, 96);
        uint u0 = Unsafe.ReadUnaligned<uint>(ref sc), u1 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref sc, 4)), u2 = Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref sc, 8));
        Vector128<sbyte> packed = Vector128.Create((u0 & 0x0F0F0F0F) | ((u2 & 0x03030303) << 4), (u1 & 0x0F0F0F0F) | (((u2 >> 2) & 0x03030303) << 4),
            ((u0 >> 4) & 0x0F0F0F0F) | (((u2 >> 4) & 0x03030303) << 4), ((u1 >> 4) & 0x0F0F0F0F) | (((u2 >> 6) & 0x03030303) << 4)).AsSByte();
        return Avx2.ConvertToVector256Int16(packed - Vector128.Create((sbyte)32));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q3KD(ref byte blk) => HalfTable.Values[Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref blk, 108))];

    /// <summary>One token's fused step for a Q3_K block: I = the scaled code sums − 4 · Σ_j s_j · Σx_j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q3KStep(float a, Vector256<int> isum, Vector256<short> scales, ref short xs, float d, float dx) =>
        MathF.FusedMultiplyAdd(Vector256.Sum(isum - Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(scales, Vector256.LoadUnsafe(ref xs)), 2)), d * dx, a);

    private static void CheckFour(int n, ReadOnlySpan<sbyte> xq, int xStride, ReadOnlySpan<float> xd, int dStride,
        ReadOnlySpan<short> sums16, int sStride, Span<float> result)
    {
        if (xStride < n * 256 || xq.Length < 3 * xStride + n * 256) ThrowHelper.LengthMismatch(nameof(xq), 3 * xStride + n * 256, xq.Length);
        if (dStride < n || xd.Length < 3 * dStride + n) ThrowHelper.LengthMismatch(nameof(xd), 3 * dStride + n, xd.Length);
        if (sStride < n * 16 || sums16.Length < 3 * sStride + n * 16) ThrowHelper.TooShort(nameof(sums16), 3 * sStride + n * 16, sums16.Length);
        if (result.Length < 4) ThrowHelper.TooShort(nameof(result), 4, result.Length);
    }

    /// <summary>Σ_j sc_j · Σ q·x over a block's eight chunks of 32 (sub-blocks 2c and 2c + 1) for
    /// <paramref name="tokens"/> (1 or 4, a constant) tokens <paramref name="xStride"/> codes apart, added to each
    /// token's eight int32 partial sums: codes from the 64 bytes at <paramref name="qs"/>, with
    /// <paramref name="fifth"/> (a constant) the third bit from the 32-byte mask at <paramref name="hmask"/> (Q3_K; bit
    /// c of byte l for weight 32c + l). Each chunk's codes and scale pairs are made once for all the tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Chunks(ref byte qs, ref byte hmask, bool fifth, Vector256<short> scales, int tokens, ref sbyte x, int xStride,
        ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        // Written out chunk by chunk, so every shift count and shuffle is a constant of its instruction.
        Vector256<byte> lo = Avx2.Permute2x128(scales, scales, 0x00).AsByte(), hi = Avx2.Permute2x128(scales, scales, 0x11).AsByte();
        Vector256<byte> h = fifth ? Vector256.LoadUnsafe(ref hmask) : default;
        Vector256<byte> raw0 = Vector256.LoadUnsafe(ref qs), raw1 = Vector256.LoadUnsafe(ref qs, 32);
        Chunk(raw0, h, lo, 0, 0, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw0, h, lo, 1, 1, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw0, h, lo, 2, 2, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw0, h, lo, 3, 3, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw1, h, hi, 0, 4, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw1, h, hi, 1, 5, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw1, h, hi, 2, 6, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
        Chunk(raw1, h, hi, 3, 7, fifth, tokens, ref x, xStride, ref i0, ref i1, ref i2, ref i3);
    }

    /// <summary>Chunk <paramref name="c"/> (weights 32c..32c + 31: bits 2j, 2j + 1 of its half's 32 code bytes, j = c
    /// mod 4) for each token: four int32 partial sums of each of its two sub-blocks, scaled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Chunk(Vector256<byte> raw, Vector256<byte> h, Vector256<byte> pairs, int j, int c, bool fifth, int tokens,
        ref sbyte x, int xStride, ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        Vector256<byte> q = Vector256.ShiftRightLogical(raw.AsUInt16(), 2 * j).AsByte() & Vector256.Create((byte)3);
        if (fifth) q |= ThirdBit(h, c);
        Vector256<short> sc = Avx2.Shuffle(pairs, PickPair(j)).AsInt16();
        nuint at = (nuint)(32 * c);
        i0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.LoadUnsafe(ref x, at)), sc);
        if (tokens == 4)
        {
            i1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.LoadUnsafe(ref x, at + (nuint)xStride)), sc);
            i2 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.LoadUnsafe(ref x, at + (nuint)(2 * xStride))), sc);
            i3 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, Vector256.LoadUnsafe(ref x, at + (nuint)(3 * xStride))), sc);
        }
    }

    /// <summary>Bit <paramref name="bit"/> (a constant) of each byte of <paramref name="h"/> moved to bit 2 and kept.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> ThirdBit(Vector256<byte> h, int bit)
    {
        Vector256<ushort> v = h.AsUInt16();
        Vector256<ushort> s = bit < 2 ? Vector256.ShiftLeft(v, 2 - bit) : bit > 2 ? Vector256.ShiftRightLogical(v, bit - 2) : v;
        return s.AsByte() & Vector256.Create((byte)4);
    }

    /// <summary>A byte shuffle putting int16 lane 2j of a 128-bit half in the low half's eight lanes and lane 2j + 1 in
    /// the high half's: chunk j's two sub-block scales, from a vector holding the same eight scales in both halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> PickPair(int j) =>
        Vector256.Create(Vector128.Create((ushort)(4 * j | (4 * j + 1) << 8)).AsByte(), Vector128.Create((ushort)((4 * j + 2) | (4 * j + 3) << 8)).AsByte());

    /// <summary>[I, M, I, M] from eight lanes of each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Totals(Vector256<int> isum, Vector256<int> msum)
    {
        Vector128<int> h = Ssse3.HorizontalAdd(isum.GetLower() + isum.GetUpper(), msum.GetLower() + msum.GetUpper());
        return Ssse3.HorizontalAdd(h, h);
    }
}
