using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>GGUF Q5_K: super-blocks of 256 weights (176 bytes): Q4_K's fp16 d and dmin and twelve bytes of 6-bit
/// scales and minimums, 32 bytes of fifth bits (bit j of byte l belongs to weight 32j + l), then Q4_K's 128 bytes of
/// nibbles. q = nibble + 16 · fifth bit (0..31); w = d · sc_j · q − dmin · m_j.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ5K
{
    public const int Size = 256, Bytes = 176;
    public ushort D, DMin;
    public BlockQ4K.Scales Sc;
    public FifthBits Qh;
    public BlockQ4K.Codes Qs;

    [InlineArray(32)]
    public struct FifthBits { private byte _e; }
}

/// <summary>Q5_K products against activations quantised per 256 (ggml's Q8_K), with Q4_K's arithmetic: exact integer
/// sums per super-block, then two fused steps (<see cref="Scalar"/>).</summary>
public static class Q5K
{
    /// <summary>Σ w·x against activations quantised per 256 (codes, one scale per super-block, Σq per 32).</summary>
    public static float VecDotQ5KQ8K(ReadOnlySpan<BlockQ5K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        if (xq.Length != w.Length * 256 || xd.Length != w.Length || blockSum.Length != w.Length * 8)
            ThrowHelper.LengthMismatch(nameof(xq), w.Length * 256, xq.Length);
        if (Avx2.IsSupported) return V256(w, xq, xd, blockSum);
        return IntDots128.IsSupported ? V128(w, xq, xd, blockSum) : Scalar(w, xq, xd, blockSum);
    }

    /// <summary>128-bit vectors (ARM64, or x86 without AVX2), as <see cref="Q4K.V128"/> with each sub-block's fifth bits
    /// on its codes (bit j of the 32 bytes of fifth bits, moved to bit 4): the sub-block sums exact, weighted by the
    /// scale in the lanes, then the specification's two fused steps — its bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V128(ReadOnlySpan<BlockQ5K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        Vector128<byte> nibble = Vector128.Create((byte)0x0F), one = Vector128.Create((byte)1);
        float a = 0, m = 0;
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ5K blk = ref Unsafe.AsRef(in w[b]);
            ref byte scales = ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc);
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            ref byte qh = ref Unsafe.As<BlockQ5K.FifthBits, byte>(ref blk.Qh);
            Vector128<byte> h0 = Vector128.LoadUnsafe(ref qh), h1 = Vector128.LoadUnsafe(ref qh, 16);
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector128<int> acc = Vector128<int>.Zero;
            int msum = 0;
            for (int g = 0; g < 4; g++)
            {
                // Sub-block 2g: the low nibbles of bytes 32g .. 32g + 31 and fifth bit 2g, against x[64g ..]; 2g + 1 the
                // high nibbles and bit 2g + 1, x[64g + 32 ..].
                Vector128<byte> p0 = Vector128.LoadUnsafe(ref qs, (nuint)(32 * g)), p1 = Vector128.LoadUnsafe(ref qs, (nuint)(32 * g + 16));
                (int sc0, int mn0) = KQuants.ScaleMin6(ref scales, 2 * g);
                (int sc1, int mn1) = KQuants.ScaleMin6(ref scales, 2 * g + 1);
                Vector128<byte> f00 = Vector128.ShiftLeft(Vector128.ShiftRightLogical(h0, 2 * g) & one, 4);
                Vector128<byte> f01 = Vector128.ShiftLeft(Vector128.ShiftRightLogical(h1, 2 * g) & one, 4);
                Vector128<byte> f10 = Vector128.ShiftLeft(Vector128.ShiftRightLogical(h0, 2 * g + 1) & one, 4);
                Vector128<byte> f11 = Vector128.ShiftLeft(Vector128.ShiftRightLogical(h1, 2 * g + 1) & one, 4);
                Vector128<int> lo = IntDots128.Add(IntDots128.Add(Vector128<int>.Zero, ((p0 & nibble) | f00).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g))),
                    ((p1 & nibble) | f01).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 16)));
                Vector128<int> hi = IntDots128.Add(IntDots128.Add(Vector128<int>.Zero, (Vector128.ShiftRightLogical(p0, 4) | f10).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 32))),
                    (Vector128.ShiftRightLogical(p1, 4) | f11).AsSByte(), Vector128.LoadUnsafe(ref xb, (nuint)(64 * g + 48)));
                acc += lo * sc0 + hi * sc1;
                msum += mn0 * blockSum[b * 8 + 2 * g] + mn1 * blockSum[b * 8 + 2 * g + 1];
            }
            int isum = Vector128.Sum(acc);
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[blk.D] * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, HalfTable.Values[blk.DMin] * xd[b], m);
        }
        return a - m;
    }

    /// <summary>Code of weight <paramref name="i"/> (0..255) of a block: its nibble and its fifth bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Code(ref BlockQ5K b, int i) =>
        ((b.Qs[i / 64 * 32 + i % 32] >> (i % 64 / 32 * 4)) & 0xF) | ((b.Qh[i % 32] >> (i / 32)) & 1) << 4;

    /// <summary>The specification, as <see cref="Q4K.Scalar"/>: per super-block the exact integers
    /// I = Σ_j sc_j·(Σ q·x) and M = Σ_j m_j·Σx, then A = fma(I, d·dx, A) and B = fma(M, dmin·dx, B) in block order;
    /// the result is A − B. Every path computes exactly these steps.</summary>
    internal static float Scalar(ReadOnlySpan<BlockQ5K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        float a = 0, m = 0;
        for (int b = 0; b < w.Length; b++)
        {
            BlockQ5K blk = w[b];
            ref byte scales = ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc);
            int isum = 0, msum = 0;
            for (int j = 0; j < 8; j++)
            {
                var (sc, mn) = KQuants.ScaleMin6(ref scales, j);
                int dot = 0;
                for (int l = 0; l < 32; l++) dot += Code(ref blk, 32 * j + l) * xq[b * 256 + j * 32 + l];
                isum += sc * dot;
                msum += mn * blockSum[b * 8 + j];
            }
            a = MathF.FusedMultiplyAdd(isum, HalfTable.Values[blk.D] * xd[b], a);
            m = MathF.FusedMultiplyAdd(msum, HalfTable.Values[blk.DMin] * xd[b], m);
        }
        return a - m;
    }

    /// <summary>AVX2 in GGUF's layout (a mapped file), as <see cref="Q4K.V256"/> with each group's fifth bits put on
    /// its codes: the u5 × s8 pair sums still fit int16 (2 · 31 · 127) and are widened by the scale at once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float V256(ReadOnlySpan<BlockQ5K> w, ReadOnlySpan<sbyte> xq, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum)
    {
        ref sbyte xr = ref MemoryMarshal.GetReference(xq);
        ref short bs = ref MemoryMarshal.GetReference(blockSum);
        Vector128<float> am = Vector128<float>.Zero; // lane 0: Σ fma(I, d·dx); lane 1: Σ fma(M, dmin·dx)
        for (int b = 0; b < w.Length; b++)
        {
            ref BlockQ5K blk = ref Unsafe.AsRef(in w[b]);
            ref BlockQ4K head = ref Unsafe.As<BlockQ5K, BlockQ4K>(ref blk); // d, dmin and the scales sit where Q4_K has them
            Vector256<short> lanes = Q4K.ScalesAndMins(ref head);
            Vector256<byte> scales = Avx2.Permute4x64(lanes.AsUInt64(), 0x44).AsByte();
            Vector128<int> mins = Sse2.MultiplyAddAdjacent(lanes.GetUpper(), Vector128.LoadUnsafe(ref bs, (nuint)(b * 8)));
            ref byte qs = ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs);
            Vector256<ushort> h = Vector256.LoadUnsafe(ref Unsafe.As<BlockQ5K.FifthBits, byte>(ref blk.Qh)).AsUInt16();
            ref sbyte xb = ref Unsafe.Add(ref xr, b * 256);
            Vector256<int> isum = Group(ref qs, h, ref xb, 0, Avx2.Shuffle(scales, Q4K.Pick(0)).AsInt16(), Avx2.Shuffle(scales, Q4K.Pick(1)).AsInt16())
                + Group(ref qs, h, ref xb, 1, Avx2.Shuffle(scales, Q4K.Pick(2)).AsInt16(), Avx2.Shuffle(scales, Q4K.Pick(3)).AsInt16())
                + Group(ref qs, h, ref xb, 2, Avx2.Shuffle(scales, Q4K.Pick(4)).AsInt16(), Avx2.Shuffle(scales, Q4K.Pick(5)).AsInt16())
                + Group(ref qs, h, ref xb, 3, Avx2.Shuffle(scales, Q4K.Pick(6)).AsInt16(), Avx2.Shuffle(scales, Q4K.Pick(7)).AsInt16());
            am = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(Q4K.Totals(isum, mins)), Q4K.DminD(ref head) * xd[b], am);
        }
        return am.GetElement(0) - am.GetElement(1);
    }

    /// <summary>Σ over group g's 64 weights of sc·q·x for its two sub-blocks (2g: low nibbles and fifth bit 2g;
    /// 2g + 1: high nibbles and bit 2g + 1), as eight int32 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Group(ref byte qs, Vector256<ushort> h, ref sbyte xb, int g, Vector256<short> s0, Vector256<short> s1)
    {
        Vector256<byte> low = Vector256.Create((byte)0x0F), five = Vector256.Create((byte)0x10);
        Vector256<byte> raw = Vector256.LoadUnsafe(ref qs, (nuint)(g * 32));
        Vector256<byte> q0 = (raw & low) | (Q4KTiles.BitToFour(h, 2 * g).AsByte() & five);
        Vector256<byte> q1 = (Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & low) | (Q4KTiles.BitToFour(h, 2 * g + 1).AsByte() & five);
        return IntDots.AddPairs(IntDots.AddPairs(Vector256<int>.Zero, Avx2.MultiplyAddAdjacent(q0, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64))), s0),
            Avx2.MultiplyAddAdjacent(q1, Vector256.LoadUnsafe(ref xb, (nuint)(g * 64 + 32))), s1);
    }
}

/// <summary>Q5_K rows interleaved sixteen at a time: <see cref="Q4KTiles"/>' layout with each sub-block's 64 bytes of
/// fifth bits ahead of its four code vectors, read by the same kernels (<see cref="Q5KLayout"/>). 2880 bytes for
/// 16 × 176 stored by GGUF (+2.3%: the scales and minimums unpacked).</summary>
internal static unsafe class Q5KTiles
{
    public static readonly int Bytes = Q4KTiles.TileBytes<Q5KLayout>();

    public static bool IsSupported => Q4KTiles.IsSupported;

    /// <summary>Writes row <paramref name="r"/> (0..15) of the tile group at <paramref name="group"/> from GGUF blocks.</summary>
    public static void SetRow(ReadOnlySpan<BlockQ5K> row, byte* group, int r)
    {
        for (int b = 0; b < row.Length; b++)
        {
            BlockQ5K blk = row[b];
            Q4KTiles.SetTileRow<Q5KLayout>(group + (long)b * Bytes, r, blk.D, blk.DMin, ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc),
                ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs), ref Unsafe.As<BlockQ5K.FifthBits, byte>(ref blk.Qh));
        }
    }

    /// <summary>Row <paramref name="r"/> of the tile group as GGUF blocks (the exact inverse of <see cref="SetRow"/>).</summary>
    public static void GetRow(byte* group, int r, Span<BlockQ5K> row)
    {
        for (int b = 0; b < row.Length; b++)
        {
            ref BlockQ5K blk = ref row[b];
            blk = default;
            Q4KTiles.GetTileRow<Q5KLayout>(group + (long)b * Bytes, r, out blk.D, out blk.DMin, ref Unsafe.As<BlockQ4K.Scales, byte>(ref blk.Sc),
                ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs), ref Unsafe.As<BlockQ5K.FifthBits, byte>(ref blk.Qh));
        }
    }

    /// <summary>One token against the sixteen rows of a tile group: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) =>
        Q4KTiles.One<Q5KLayout>(group, superBlocks, a, token, lanes);

    /// <summary>Tokens <paramref name="token"/> .. + 3 at once: token t's row r in <paramref name="lanes"/>[16t + r].</summary>
    public static void Four(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) =>
        Q4KTiles.Four<Q5KLayout>(group, superBlocks, a, token, lanes);
}
