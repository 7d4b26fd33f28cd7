using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Which low-bit k-quant a tile group holds (<see cref="LowBitKTiles"/>); the kernels are compiled once per
/// layout and the branches on <see cref="TwoBit"/> fold away.</summary>
internal interface ILowBitTileLayout
{
    /// <summary>Q2_K (2-bit codes, 4-bit scales and minimums); else Q3_K (3-bit codes, 6-bit signed scales).</summary>
    static abstract bool TwoBit { get; }
}

internal readonly struct Q2KTileLayout : ILowBitTileLayout
{
    public static bool TwoBit => true;
}

internal readonly struct Q3KTileLayout : ILowBitTileLayout
{
    public static bool TwoBit => false;
}

/// <summary>Q2_K and Q3_K rows interleaved sixteen at a time for the one- and four-token kernels (512-bit with
/// AVX-512, else 256-bit halves with AVX2), as <see cref="Q6KTiles"/> does for Q6_K, whose sixteen-column sub-blocks
/// with a scale each these formats share. In GGUF's layout (<see cref="LowBitKQuants"/>) a one-token product picks
/// sub-block scales, unpacks codes and reduces each row's lanes once per row and super-block, and decoded at about
/// three fifths of the read bound; with rows in the 32-bit lanes each group of four activations is broadcast once for
/// sixteen rows and no lane is reduced. One tile per super-block (256 columns) of sixteen rows; a kernel reads a tile
/// front to back, so consecutive tiles are one sequential stream.
/// <list type="bullet">
/// <item>Q2_K, 1,344 bytes (16 × 84, every byte GGUF stores): [0, 256) the packed scale and minimum bytes in pairs,
/// byte 32p + 2r + e = row r's byte of sub-block 2p + e (scale in the low nibble, minimum in the high); [256, 320) d
/// of rows 0..15, then dmin, as GGUF's fp16; [320, 1344) the codes, sub-block m's 64 bytes at 320 + 64m, byte 4r + i
/// holding row r's codes of columns 16m + i, + 4 + i, + 8 + i, + 12 + i in bits 0–1, 2–3, 4–5, 6–7.</item>
/// <item>Q3_K, 1,792 bytes (16 × 108 stored, + 64: the 6-bit scales unpacked to bytes, as Q4_K's tiles do): [0, 256)
/// the scales − 32 as int8 in pairs, byte 32p + 2r + e = row r's of sub-block 2p + e; [256, 1792) the codes in pairs
/// of sub-blocks, 192 bytes at 256 + 192p: the two low bits of sub-block 2p then of 2p + 1 as Q2_K's codes are
/// kept, then a vector of third bits, byte 4r + i holding those of columns 32p + 4k + i in bit k and 32p + 16 + 4k + i
/// in bit 4 + k (k = 0..3). The d of every super-block come first in the group (rows 0..15 as fp16, 32 bytes a
/// super-block, padded to a cache line) so that tiles are whole cache lines, as in <see cref="Q6KTiles"/>.</item>
/// </list>
/// <para>The arithmetic is <see cref="LowBitKQuants"/>' specification, lane by lane: the exact integers per
/// super-block (u2 / u3 codes × s8 pair sums in int16, each sub-block's scale applied by the widening pair-add, the
/// terms in Σx_j from the activations' sums per 16: Q2_K's minimums, Q3_K's − 4), then Q2_K's A = fma(I, d·dx, A),
/// B = fma(M, dmin·dx, B) with result A − B, and Q3_K's A = fma(I, d·dx, A) — the same bits as every other path.</para></summary>
internal static unsafe class LowBitKTiles
{
    public const int Rows = 16;
    private const int ScaleOffset = 0, Q2HalfOffset = 256, Q2CodeOffset = 320, Q3CodeOffset = 256, Q3PairBytes = 192;

    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Bytes of one tile (a super-block of sixteen rows): whole cache lines.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TileBytes<TL>() where TL : struct, ILowBitTileLayout => TL.TwoBit ? 1344 : 1792;

    /// <summary>Bytes before the first tile: Q3_K's d of every super-block, a multiple of 64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int HeadBytes<TL>(int superBlocks) where TL : struct, ILowBitTileLayout => TL.TwoBit ? 0 : (superBlocks * 32 + 63) / 64 * 64;

    /// <summary>Bytes of a group of sixteen rows of <paramref name="superBlocks"/> super-blocks: a multiple of 64.</summary>
    public static long GroupBytes<TL>(int superBlocks) where TL : struct, ILowBitTileLayout =>
        HeadBytes<TL>(superBlocks) + (long)superBlocks * TileBytes<TL>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Tile<TL>(byte* group, int superBlocks, int b) where TL : struct, ILowBitTileLayout =>
        group + HeadBytes<TL>(superBlocks) + (long)b * TileBytes<TL>();

    /// <summary>Super-block b's sixteen d: in the tile (Q2_K, then the sixteen dmin), or at the group's front (Q3_K).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort* Halves<TL>(byte* group, byte* tile, int b) where TL : struct, ILowBitTileLayout =>
        TL.TwoBit ? (ushort*)(tile + Q2HalfOffset) : (ushort*)(group + 32 * b);

    /// <summary>How far ahead of the tile being multiplied its lines are prefetched (about 7 KB, as for the Q4_K and
    /// Q6_K tiles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PrefetchAhead<TL>() where TL : struct, ILowBitTileLayout => TL.TwoBit ? 5 * 1344 : 4 * 1792;

    /// <summary>Writes row <paramref name="r"/> (0..15) of the tile group at <paramref name="group"/> from a row of
    /// GGUF blocks (84 bytes each for Q2_K, 110 for Q3_K). Rows of one group touch disjoint bytes, so rows can be
    /// written from several threads.</summary>
    public static void SetRow<TL>(ReadOnlySpan<byte> row, byte* group, int r) where TL : struct, ILowBitTileLayout
    {
        int blockBytes = TL.TwoBit ? LowBitKQuants.Q2KBytes : LowBitKQuants.Q3KBytes, superBlocks = row.Length / blockBytes;
        for (int b = 0; b < superBlocks; b++)
        {
            ReadOnlySpan<byte> blk = row.Slice(b * blockBytes, blockBytes);
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b);
            if (TL.TwoBit)
            {
                for (int j = 0; j < 16; j++) t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2] = blk[j];
                halves[r] = BinaryPrimitives.ReadUInt16LittleEndian(blk[80..]);
                halves[16 + r] = BinaryPrimitives.ReadUInt16LittleEndian(blk[82..]);
                ReadOnlySpan<byte> qs = blk.Slice(16, 64);
                for (int m = 0; m < 16; m++)
                    for (int i = 0; i < 4; i++)
                        t[Q2CodeOffset + 64 * m + 4 * r + i] = (byte)(LowBitKQuants.Code2(qs, 16 * m + i) | LowBitKQuants.Code2(qs, 16 * m + 4 + i) << 2
                            | LowBitKQuants.Code2(qs, 16 * m + 8 + i) << 4 | LowBitKQuants.Code2(qs, 16 * m + 12 + i) << 6);
            }
            else
            {
                for (int j = 0; j < 16; j++) t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2] = (byte)(sbyte)KQuants.Q3Scale(blk.Slice(96, 12), j);
                halves[r] = BinaryPrimitives.ReadUInt16LittleEndian(blk[108..]);
                for (int p = 0; p < 8; p++)
                {
                    byte* v = t + Q3CodeOffset + Q3PairBytes * p;
                    for (int i = 0; i < 4; i++)
                    {
                        int third = 0;
                        for (int e = 0; e < 2; e++)
                        {
                            int low = 0;
                            for (int k = 0; k < 4; k++)
                            {
                                int q = LowBitKQuants.Q3Code(blk, 32 * p + 16 * e + 4 * k + i);
                                low |= (q & 3) << (2 * k);
                                third |= (q >> 2) << (4 * e + k);
                            }
                            v[64 * e + 4 * r + i] = (byte)low;
                        }
                        v[128 + 4 * r + i] = (byte)third;
                    }
                }
            }
        }
    }

    /// <summary>Row <paramref name="r"/> of the tile group as GGUF blocks (the exact inverse of <see cref="SetRow{TL}"/>).</summary>
    public static void GetRow<TL>(byte* group, int r, Span<byte> row) where TL : struct, ILowBitTileLayout
    {
        int blockBytes = TL.TwoBit ? LowBitKQuants.Q2KBytes : LowBitKQuants.Q3KBytes, superBlocks = row.Length / blockBytes;
        row.Clear();
        for (int b = 0; b < superBlocks; b++)
        {
            Span<byte> blk = row.Slice(b * blockBytes, blockBytes);
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b);
            if (TL.TwoBit)
            {
                for (int j = 0; j < 16; j++) blk[j] = t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2];
                BinaryPrimitives.WriteUInt16LittleEndian(blk[80..], halves[r]);
                BinaryPrimitives.WriteUInt16LittleEndian(blk[82..], halves[16 + r]);
                for (int m = 0; m < 16; m++)
                    for (int i = 0; i < 4; i++)
                    {
                        int v = t[Q2CodeOffset + 64 * m + 4 * r + i];
                        for (int k = 0; k < 4; k++) KQuants.SetTwoBits(blk.Slice(16, 64), 16 * m + 4 * k + i, v >> (2 * k) & 3);
                    }
            }
            else
            {
                for (int j = 0; j < 16; j++) KQuants.SetQ3Scale(blk.Slice(96, 12), j, (sbyte)t[ScaleOffset + j / 2 * 32 + 2 * r + j % 2] + 32);
                BinaryPrimitives.WriteUInt16LittleEndian(blk[108..], halves[r]);
                for (int p = 0; p < 8; p++)
                {
                    byte* v = t + Q3CodeOffset + Q3PairBytes * p;
                    for (int i = 0; i < 4; i++)
                        for (int e = 0; e < 2; e++)
                            for (int k = 0; k < 4; k++)
                            {
                                int c = 32 * p + 16 * e + 4 * k + i;
                                KQuants.SetTwoBits(blk.Slice(32, 64), c, v[64 * e + 4 * r + i] >> (2 * k) & 3);
                                blk[c % 32] |= (byte)((v[128 + 4 * r + i] >> (4 * e + k) & 1) << (c / 32));
                            }
                }
            }
        }
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="a"/> (quantised per 256, with sums per 16) against
    /// the sixteen rows of the tile group at <paramref name="group"/>: row r's result in <paramref name="lanes"/>[r].</summary>
    public static void One<TL>(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) where TL : struct, ILowBitTileLayout
    {
        CheckTokens(a, superBlocks, token + 1);
        PrefetchHead<TL>(group, superBlocks);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.Sums16)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) OneKernel<TL>(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 16, lanes);
            else OneKernel256<TL>(group, superBlocks, x, d + token * superBlocks, s + token * superBlocks * 16, lanes);
        }
    }

    /// <summary>Tokens <paramref name="token"/> .. + 3 at once: token t's row r in <paramref name="lanes"/>[16t + r].</summary>
    public static void Four<TL>(byte* group, int superBlocks, QuantizedActivations a, int token, float* lanes) where TL : struct, ILowBitTileLayout
    {
        CheckTokens(a, superBlocks, token + 4);
        PrefetchHead<TL>(group, superBlocks);
        fixed (sbyte* q = a.Q) fixed (float* d = a.D) fixed (short* s = a.Sums16)
        {
            sbyte* x = q + (long)token * superBlocks * 256;
            if (Avx512BW.IsSupported) FourKernel<TL>(group, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 16, lanes);
            else
                for (int half = 0; half < 2; half++)
                    FourKernel256<TL>(group, half, superBlocks, x, superBlocks * 256, d + token * superBlocks, s + token * superBlocks * 16, lanes + 8 * half);
        }
    }

    private static void CheckTokens(QuantizedActivations a, int superBlocks, int tokens)
    {
        if (a.Q.Length < (long)tokens * superBlocks * 256 || a.D.Length < tokens * superBlocks || a.Sums16.Length < tokens * superBlocks * 16)
            ThrowHelper.TooShort(nameof(a), (long)tokens * superBlocks * 256, a.Q.Length);
    }

    /// <summary>Q3_K's d come first in the group, before the stream the hardware prefetcher follows: ask for their lines at once.</summary>
    private static void PrefetchHead<TL>(byte* group, int superBlocks) where TL : struct, ILowBitTileLayout
    {
        for (int i = 0; i < HeadBytes<TL>(superBlocks); i += 64) Sse.Prefetch0(group + i);
    }

    /// <summary>One token: the sixteen rows' results into <paramref name="result"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)] // compiled optimised at once, on its own (see Q6KTiles)
    private static void OneKernel<TL>(byte* group, int superBlocks, sbyte* x, float* xd, short* sums16, float* result) where TL : struct, ILowBitTileLayout
    {
        bool ahead = Q4KTiles.PrefetchesAhead; // first and once, not in the loop
        Vector512<float> acc = default, mins = default;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b);
            Vector512<float> d = HalfTable.ToSingle(Vector256.Load(halves)); // loaded before the codes, so a miss overlaps them
            Vector512<int> isum = default, term = default;
            for (int p = 0; p < 8; p++)
            {
                Scales<TL>(t, p, out Vector512<short> pair, out Vector512<short> termPair);
                if (ahead) Prefetch<TL>(t, p);
                term += Avx512BW.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast(sums16 + 2 * p));
                sbyte* xm = x + 32 * p;
                Unpack<TL>(t, p, 0, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3);
                isum = Step(isum, c0, c1, c2, c3, Q6KTiles.Pick(pair, 0), xm);
                Unpack<TL>(t, p, 1, out c0, out c1, out c2, out c3);
                isum = Step(isum, c0, c1, c2, c3, Q6KTiles.Pick(pair, 1), xm + 16);
            }
            Vector512<float> dx = Vector512.Create(xd[b]);
            if (TL.TwoBit)
            {
                acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(isum), d * dx, acc);
                mins = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(term), HalfTable.ToSingle(Vector256.Load(halves + 16)) * dx, mins);
            }
            else acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(isum - (term << 2)), d * dx, acc);
        }
        (TL.TwoBit ? acc - mins : acc).Store(result);
    }

    /// <summary>Four tokens <paramref name="stride"/> codes apart: each sub-block's codes are loaded and unpacked once
    /// for all four; every token's lanes get exactly <see cref="OneKernel{TL}"/>'s arithmetic.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernel<TL>(byte* group, int superBlocks, sbyte* x, int stride, float* xd, short* sums16, float* result)
        where TL : struct, ILowBitTileLayout
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, m0 = default, m1 = default, m2 = default, m3 = default;
        int sStride = stride / 16, dStride = stride / 256;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b);
            Vector512<float> d = HalfTable.ToSingle(Vector256.Load(halves));
            Vector512<int> i0 = default, i1 = default, i2 = default, i3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
            for (int p = 0; p < 8; p++)
            {
                Scales<TL>(t, p, out Vector512<short> pair, out Vector512<short> termPair);
                Prefetch<TL>(t, p);
                short* s = sums16 + 2 * p;
                o0 += Avx512BW.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast(s));
                o1 += Avx512BW.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast(s + sStride));
                o2 += Avx512BW.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast(s + 2 * sStride));
                o3 += Avx512BW.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast(s + 3 * sStride));
                sbyte* xm = x + 32 * p;
                for (int e = 0; e < 2; e++, xm += 16)
                {
                    Unpack<TL>(t, p, e, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3);
                    Vector512<short> sc = Q6KTiles.Pick(pair, e);
                    i0 = Step(i0, c0, c1, c2, c3, sc, xm);
                    i1 = Step(i1, c0, c1, c2, c3, sc, xm + stride);
                    i2 = Step(i2, c0, c1, c2, c3, sc, xm + 2 * stride);
                    i3 = Step(i3, c0, c1, c2, c3, sc, xm + 3 * stride);
                }
            }
            if (TL.TwoBit)
            {
                Vector512<float> dmin = HalfTable.ToSingle(Vector256.Load(halves + 16));
                Vector512<float> x0 = Vector512.Create(xd[b]), x1 = Vector512.Create(xd[dStride + b]), x2 = Vector512.Create(xd[2 * dStride + b]), x3 = Vector512.Create(xd[3 * dStride + b]);
                a0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i0), d * x0, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i1), d * x1, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i2), d * x2, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i3), d * x3, a3);
                m0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(o0), dmin * x0, m0);
                m1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(o1), dmin * x1, m1);
                m2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(o2), dmin * x2, m2);
                m3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(o3), dmin * x3, m3);
            }
            else
            {
                a0 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i0 - (o0 << 2)), d * Vector512.Create(xd[b]), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i1 - (o1 << 2)), d * Vector512.Create(xd[dStride + b]), a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i2 - (o2 << 2)), d * Vector512.Create(xd[2 * dStride + b]), a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(i3 - (o3 << 2)), d * Vector512.Create(xd[3 * dStride + b]), a3);
            }
        }
        (a0 - m0).Store(result); // Q3_K's m stay zero, and x − 0 is x
        (a1 - m1).Store(result + Rows);
        (a2 - m2).Store(result + 2 * Rows);
        (a3 - m3).Store(result + 3 * Rows);
    }

    /// <summary><see cref="OneKernel{TL}"/> in 256-bit registers (AVX2): rows 0–7 and 8–15 of each vector as two halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void OneKernel256<TL>(byte* group, int superBlocks, sbyte* x, float* xd, short* sums16, float* result) where TL : struct, ILowBitTileLayout
    {
        bool ahead = Q4KTiles.PrefetchesAhead;
        Vector256<float> acc0 = default, acc1 = default, mins0 = default, mins1 = default;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b);
            Vector256<float> d0 = HalfTable.ToSingle(Vector128.Load(halves)), d1 = HalfTable.ToSingle(Vector128.Load(halves + 8));
            Vector256<int> isum0 = default, isum1 = default, term0 = default, term1 = default;
            for (int p = 0; p < 8; p++)
            {
                Scales256<TL>(t, p, 0, out Vector256<short> pair0, out Vector256<short> termPair0);
                Scales256<TL>(t, p, 1, out Vector256<short> pair1, out Vector256<short> termPair1);
                if (ahead) Prefetch<TL>(t, p);
                Vector256<short> s = Q6KTiles.Broadcast256(sums16 + 2 * p);
                term0 += Avx2.MultiplyAddAdjacent(termPair0, s);
                term1 += Avx2.MultiplyAddAdjacent(termPair1, s);
                sbyte* xm = x + 32 * p;
                for (int e = 0; e < 2; e++, xm += 16)
                {
                    Unpack256<TL>(t, p, e, 0, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3);
                    isum0 = Step256(isum0, c0, c1, c2, c3, Q6KTiles.Pick256(pair0, e), xm);
                    Unpack256<TL>(t, p, e, 1, out c0, out c1, out c2, out c3);
                    isum1 = Step256(isum1, c0, c1, c2, c3, Q6KTiles.Pick256(pair1, e), xm);
                }
            }
            Vector256<float> dx = Vector256.Create(xd[b]);
            if (TL.TwoBit)
            {
                acc0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum0), d0 * dx, acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum1), d1 * dx, acc1);
                mins0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(term0), HalfTable.ToSingle(Vector128.Load(halves + 16)) * dx, mins0);
                mins1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(term1), HalfTable.ToSingle(Vector128.Load(halves + 24)) * dx, mins1);
            }
            else
            {
                acc0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum0 - (term0 << 2)), d0 * dx, acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum1 - (term1 << 2)), d1 * dx, acc1);
            }
        }
        (acc0 - mins0).Store(result);
        (acc1 - mins1).Store(result + 8);
    }

    /// <summary><see cref="FourKernel{TL}"/> in 256-bit registers for rows 8·<paramref name="half"/> .. + 7 (a pass per
    /// half: the other half's tiles come back from L1), token t's row r in <paramref name="result"/>[16t + r].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static void FourKernel256<TL>(byte* group, int half, int superBlocks, sbyte* x, int stride, float* xd, short* sums16, float* result)
        where TL : struct, ILowBitTileLayout
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, m0 = default, m1 = default, m2 = default, m3 = default;
        int sStride = stride / 16, dStride = stride / 256;
        for (int b = 0; b < superBlocks; b++, x += 256, sums16 += 16)
        {
            byte* t = Tile<TL>(group, superBlocks, b);
            ushort* halves = Halves<TL>(group, t, b) + 8 * half;
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
            for (int p = 0; p < 8; p++)
            {
                Scales256<TL>(t, p, half, out Vector256<short> pair, out Vector256<short> termPair);
                if (half == 0) Prefetch<TL>(t, p);
                short* s = sums16 + 2 * p;
                o0 += Avx2.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast256(s));
                o1 += Avx2.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast256(s + sStride));
                o2 += Avx2.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast256(s + 2 * sStride));
                o3 += Avx2.MultiplyAddAdjacent(termPair, Q6KTiles.Broadcast256(s + 3 * sStride));
                sbyte* xm = x + 32 * p;
                for (int e = 0; e < 2; e++, xm += 16)
                {
                    Unpack256<TL>(t, p, e, half, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3);
                    Vector256<short> sc = Q6KTiles.Pick256(pair, e);
                    i0 = Step256(i0, c0, c1, c2, c3, sc, xm);
                    i1 = Step256(i1, c0, c1, c2, c3, sc, xm + stride);
                    i2 = Step256(i2, c0, c1, c2, c3, sc, xm + 2 * stride);
                    i3 = Step256(i3, c0, c1, c2, c3, sc, xm + 3 * stride);
                }
            }
            Vector256<float> d = HalfTable.ToSingle(Vector128.Load(halves));
            Vector256<float> x0 = Vector256.Create(xd[b]), x1 = Vector256.Create(xd[dStride + b]), x2 = Vector256.Create(xd[2 * dStride + b]), x3 = Vector256.Create(xd[3 * dStride + b]);
            if (TL.TwoBit)
            {
                Vector256<float> dmin = HalfTable.ToSingle(Vector128.Load(halves + 16));
                a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), d * x0, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), d * x1, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2), d * x2, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3), d * x3, a3);
                m0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(o0), dmin * x0, m0);
                m1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(o1), dmin * x1, m1);
                m2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(o2), dmin * x2, m2);
                m3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(o3), dmin * x3, m3);
            }
            else
            {
                a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0 - (o0 << 2)), d * x0, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1 - (o1 << 2)), d * x1, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2 - (o2 << 2)), d * x2, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3 - (o3 << 2)), d * x3, a3);
            }
        }
        (a0 - m0).Store(result);
        (a1 - m1).Store(result + Rows);
        (a2 - m2).Store(result + 2 * Rows);
        (a3 - m3).Store(result + 3 * Rows);
    }

    /// <summary><paramref name="acc"/> + one token's Σ sc · q · x over a sub-block's sixteen columns: the codes are
    /// small enough (≤ 7) that all four code vectors' pair sums add up in int16 (4 · 2 · 7 · 128 = 7,168) before one
    /// widening pair-add applies the scale (Q6_K's codes need two).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Step(Vector512<int> acc, Vector512<byte> c0, Vector512<byte> c1, Vector512<byte> c2, Vector512<byte> c3,
        Vector512<short> sc, sbyte* x) =>
        acc + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c0, Q6KTiles.Broadcast(x)) + Avx512BW.MultiplyAddAdjacent(c1, Q6KTiles.Broadcast(x + 4))
            + (Avx512BW.MultiplyAddAdjacent(c2, Q6KTiles.Broadcast(x + 8)) + Avx512BW.MultiplyAddAdjacent(c3, Q6KTiles.Broadcast(x + 12))), sc);

    /// <summary><see cref="Step"/> for the eight rows of 256-bit code vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Step256(Vector256<int> acc, Vector256<byte> c0, Vector256<byte> c1, Vector256<byte> c2, Vector256<byte> c3,
        Vector256<short> sc, sbyte* x) =>
        acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c0, Q6KTiles.Broadcast256(x)) + Avx2.MultiplyAddAdjacent(c1, Q6KTiles.Broadcast256(x + 4))
            + (Avx2.MultiplyAddAdjacent(c2, Q6KTiles.Broadcast256(x + 8)) + Avx2.MultiplyAddAdjacent(c3, Q6KTiles.Broadcast256(x + 12))), sc);

    /// <summary>Sub-blocks 2p and 2p + 1's scales (row r's two in the int16 halves of lane r) and the multipliers of
    /// their Σx terms: Q2_K's minimums, or Q3_K's scales again (the − 4 is applied once per super-block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scales<TL>(byte* t, int p, out Vector512<short> pair, out Vector512<short> termPair) where TL : struct, ILowBitTileLayout
    {
        if (TL.TwoBit)
        {
            Vector512<short> packed = Avx512BW.ConvertToVector512Int16(Vector256.Load(t + ScaleOffset + 32 * p));
            pair = packed & Vector512.Create((short)0x0F);
            termPair = Vector512.ShiftRightLogical(packed, 4);
        }
        else termPair = pair = Avx512BW.ConvertToVector512Int16(Vector256.Load((sbyte*)(t + ScaleOffset + 32 * p)));
    }

    /// <summary><see cref="Scales{TL}"/> of rows 8·<paramref name="half"/> .. + 7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scales256<TL>(byte* t, int p, int half, out Vector256<short> pair, out Vector256<short> termPair) where TL : struct, ILowBitTileLayout
    {
        if (TL.TwoBit)
        {
            Vector256<short> packed = Avx2.ConvertToVector256Int16(Vector128.Load(t + ScaleOffset + 32 * p + 16 * half));
            pair = packed & Vector256.Create((short)0x0F);
            termPair = Vector256.ShiftRightLogical(packed, 4);
        }
        else termPair = pair = Avx2.ConvertToVector256Int16(Vector128.Load((sbyte*)(t + ScaleOffset + 32 * p + 16 * half)));
    }

    /// <summary>The codes of sub-block 2p + e: columns 16m + i, + 4 + i, + 8 + i, + 12 + i (i = 0..3) of the sixteen
    /// rows, byte 4r + i of each vector. 16-bit shifts: the bits a byte takes from its neighbour are masked away.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack<TL>(byte* t, int p, int e, out Vector512<byte> c0, out Vector512<byte> c1, out Vector512<byte> c2, out Vector512<byte> c3)
        where TL : struct, ILowBitTileLayout
    {
        Vector512<byte> two = Vector512.Create((byte)3);
        if (TL.TwoBit)
        {
            Vector512<ushort> l = Vector512.Load(t + Q2CodeOffset + 64 * (2 * p + e)).AsUInt16();
            c0 = l.AsByte() & two;
            c1 = Vector512.ShiftRightLogical(l, 2).AsByte() & two;
            c2 = Vector512.ShiftRightLogical(l, 4).AsByte() & two;
            c3 = Vector512.ShiftRightLogical(l, 6).AsByte() & two;
        }
        else
        {
            byte* v = t + Q3CodeOffset + Q3PairBytes * p;
            Vector512<ushort> l = Vector512.Load(v + 64 * e).AsUInt16(), h = Vector512.ShiftRightLogical(Vector512.Load(v + 128).AsUInt16(), 4 * e);
            Vector512<byte> four = Vector512.Create((byte)4);
            c0 = (l.AsByte() & two) | (Vector512.ShiftLeft(h, 2).AsByte() & four);
            c1 = (Vector512.ShiftRightLogical(l, 2).AsByte() & two) | (Vector512.ShiftLeft(h, 1).AsByte() & four);
            c2 = (Vector512.ShiftRightLogical(l, 4).AsByte() & two) | (h.AsByte() & four);
            c3 = (Vector512.ShiftRightLogical(l, 6).AsByte() & two) | (Vector512.ShiftRightLogical(h, 1).AsByte() & four);
        }
    }

    /// <summary><see cref="Unpack{TL}"/> of rows 8·<paramref name="half"/> .. + 7 (the 32 bytes at + 32·half of each vector).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack256<TL>(byte* t, int p, int e, int half, out Vector256<byte> c0, out Vector256<byte> c1, out Vector256<byte> c2, out Vector256<byte> c3)
        where TL : struct, ILowBitTileLayout
    {
        Vector256<byte> two = Vector256.Create((byte)3);
        if (TL.TwoBit)
        {
            Vector256<ushort> l = Vector256.Load(t + Q2CodeOffset + 64 * (2 * p + e) + 32 * half).AsUInt16();
            c0 = l.AsByte() & two;
            c1 = Vector256.ShiftRightLogical(l, 2).AsByte() & two;
            c2 = Vector256.ShiftRightLogical(l, 4).AsByte() & two;
            c3 = Vector256.ShiftRightLogical(l, 6).AsByte() & two;
        }
        else
        {
            byte* v = t + Q3CodeOffset + Q3PairBytes * p + 32 * half;
            Vector256<ushort> l = Vector256.Load(v + 64 * e).AsUInt16(), h = Vector256.ShiftRightLogical(Vector256.Load(v + 128).AsUInt16(), 4 * e);
            Vector256<byte> four = Vector256.Create((byte)4);
            c0 = (l.AsByte() & two) | (Vector256.ShiftLeft(h, 2).AsByte() & four);
            c1 = (Vector256.ShiftRightLogical(l, 2).AsByte() & two) | (Vector256.ShiftLeft(h, 1).AsByte() & four);
            c2 = (Vector256.ShiftRightLogical(l, 4).AsByte() & two) | (h.AsByte() & four);
            c3 = (Vector256.ShiftRightLogical(l, 6).AsByte() & two) | (Vector256.ShiftRightLogical(h, 1).AsByte() & four);
        }
    }

    /// <summary>An eighth of the tile <see cref="PrefetchAhead{TL}"/> bytes on (168 bytes of a Q2_K tile, three lines
    /// from wherever it starts; 224 of a Q3_K tile, four lines), so the eight cover every line: prefetch instructions
    /// never fault, so past the last tile is harmless.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch<TL>(byte* t, int p) where TL : struct, ILowBitTileLayout
    {
        byte* f = t + PrefetchAhead<TL>() + TileBytes<TL>() / 8 * p;
        Sse.Prefetch0(f);
        Sse.Prefetch0(f + 64);
        Sse.Prefetch0(f + 128);
        if (!TL.TwoBit) Sse.Prefetch0(f + 192);
    }
}
