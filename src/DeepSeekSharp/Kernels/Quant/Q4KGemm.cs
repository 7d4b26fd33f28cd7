using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Q4_K rows in panels: sub-block j of a row becomes the 32 int16 codes sc_j·q (≤ 945, so vpmaddwd pair sums
/// stay exact), laid out as <see cref="PanelPack"/> does.</summary>
internal readonly struct Q4KRows : IPanelRows
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Codes(ref byte row, int s)
    {
        ref BlockQ4K blk = ref Unsafe.As<byte, BlockQ4K>(ref Unsafe.Add(ref row, (s >> 3) * BlockQ4K.Bytes));
        int j = s & 7;
        Vector256<byte> raw = Vector256.LoadUnsafe(ref Unsafe.Add(ref Unsafe.As<BlockQ4K.Codes, byte>(ref blk.Qs), (j >> 1) * 32));
        Vector256<byte> q = (j & 1) == 0 ? raw & Vector256.Create((byte)0x0F) : Vector256.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & Vector256.Create((byte)0x0F);
        return (Avx512BW.ConvertToVector512Int16(q) * Vector512.Create((short)Q4K.ScaleMin(ref blk, j).Scale)).AsInt32();
    }

}

/// <summary>Many tokens against Q4_K rows (prefill) with AVX-512, as <see cref="BlockGemm{T}"/> does for 32-weight
/// blocks: sixteen rows unpacked once into a panel of sc·q codes, six tokens a pass, each lane one row's exact
/// int32 super-block sum Σ_j sc_j·(q·x); the minimums' Σ_j m_j·Σx_j from a small panel of m codes against the
/// activations' per-32 sums. The float steps per row and token are <see cref="Q4K.Scalar"/>'s exactly, so every path
/// gives the same bits.</summary>
internal static class Q4KGemm
{
    public const int PanelRows = 16;
    private const int TokensPerPass = BlockGemm<Q8_0Codes>.TokensPerPass;
    public const int TokenPadding = TokensPerPass - 1;
    public const int PartialsLength = 2 * TokensPerPass * PanelRows;

    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>Panel shorts per super-block: 8 sub-blocks of codes plus 4 pairs of minimum codes.</summary>
    public const int ShortsPerSuperBlock = 8 * 512 + 128;

    /// <summary>Unpacks rows [0, <paramref name="rows"/>) into <paramref name="panel"/> (codes [sb·8, 16 pairs, 16 rows, 2]
    /// then minimum codes [sb, 4 pairs, 16 rows, 2]) and <paramref name="scales"/> (d [sb, 16 rows] then dmin).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Pack(ref byte w, long rowBytes, int rows, int superBlocks, Span<short> panel, Span<float> scales)
    {
        if (panel.Length < superBlocks * ShortsPerSuperBlock || scales.Length < superBlocks * 32 || (uint)rows > PanelRows)
            ThrowHelper.TooShort(nameof(panel), superBlocks * ShortsPerSuperBlock, panel.Length);
        PanelPack.Codes<Q4KRows>(ref w, rowBytes, rows, superBlocks * 8, panel);
        Span<short> mins = panel.Slice(superBlocks * 8 * 512, superBlocks * 128);
        float[] half = HalfTable.Values;
        for (int j = 0; j < PanelRows; j++)
            for (int b = 0; b < superBlocks; b++)
            {
                if (j >= rows)
                {
                    scales[b * 16 + j] = scales[(superBlocks + b) * 16 + j] = 0f;
                    for (int k = 0; k < 8; k++) mins[(b * 4 + k / 2) * 32 + j * 2 + k % 2] = 0;
                    continue;
                }
                ref BlockQ4K blk = ref Unsafe.As<byte, BlockQ4K>(ref Unsafe.Add(ref w, (nint)(j * rowBytes + b * BlockQ4K.Bytes)));
                scales[b * 16 + j] = half[blk.D];
                scales[(superBlocks + b) * 16 + j] = half[blk.DMin];
                for (int k = 0; k < 8; k++) mins[(b * 4 + k / 2) * 32 + j * 2 + k % 2] = (short)Q4K.ScaleMin(ref blk, k).Min;
            }
    }

    /// <summary>y[t · yStride + j] = row j · token t for tokens [0, n): <paramref name="x16"/> [n, cols] int16 codes,
    /// <paramref name="xd"/> [n, superBlocks] scales, <paramref name="blockSum"/> [n, superBlocks · 8] Σq per 32, each
    /// readable up to <see cref="TokenPadding"/> tokens past n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int superBlocks, int rows,
        ReadOnlySpan<short> x16, ReadOnlySpan<float> xd, ReadOnlySpan<short> blockSum, int n, Span<float> partials, float* y, long yStride)
    {
        int cols = superBlocks * 256, subs = superBlocks * 8, padded = (n + TokenPadding) / TokensPerPass * TokensPerPass;
        if (panel.Length < superBlocks * ShortsPerSuperBlock || scales.Length < superBlocks * 32 || x16.Length < padded * cols
            || xd.Length < padded * superBlocks || blockSum.Length < padded * subs || partials.Length < PartialsLength)
            ThrowHelper.TooShort(nameof(x16), padded * cols, x16.Length);
        nint stride = cols * sizeof(short);
        Span<float> lane = stackalloc float[PanelRows];
        fixed (short* pw = panel, xq = x16, bsum = blockSum)
        fixed (float* ps = scales, part = partials, xs = xd)
        {
            short* pm = pw + superBlocks * 8 * 512;
            for (int t0 = 0; t0 < n; t0 += TokensPerPass)
            {
                byte* x = (byte*)(xq + (long)t0 * cols);
                float* d0 = xs + (long)t0 * superBlocks;
                short* bs0 = bsum + (long)t0 * subs;
                new Span<float>(part, PartialsLength).Clear();
                for (int b = 0; b < superBlocks; b++)
                {
                    Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default;
                    for (int j = 0; j < 8; j++)
                        PanelPack.AddSums(pw + (b * 8 + j) * 512, x + (b * 256 + j * 32) * 2, stride, ref s0, ref s1, ref s2, ref s3, ref s4, ref s5);
                    Vector512<float> ws = Vector512.Load(ps + b * 16), wm = Vector512.Load(ps + (superBlocks + b) * 16);
                    Fold(part, s0, ws * d0[b]);
                    Fold(part + 16, s1, ws * d0[superBlocks + b]);
                    Fold(part + 32, s2, ws * d0[2 * superBlocks + b]);
                    Fold(part + 48, s3, ws * d0[3 * superBlocks + b]);
                    Fold(part + 64, s4, ws * d0[4 * superBlocks + b]);
                    Fold(part + 80, s5, ws * d0[5 * superBlocks + b]);
                    for (int t = 0; t < TokensPerPass; t++)
                    {
                        short* bst = bs0 + t * subs + b * 8;
                        short* mb = pm + b * 128;
                        Vector512<int> m = Avx512BW.MultiplyAddAdjacent(Vector512.Load(mb), Vector512.Create(*(int*)bst).AsInt16())
                            + Avx512BW.MultiplyAddAdjacent(Vector512.Load(mb + 32), Vector512.Create(*(int*)(bst + 2)).AsInt16())
                            + Avx512BW.MultiplyAddAdjacent(Vector512.Load(mb + 64), Vector512.Create(*(int*)(bst + 4)).AsInt16())
                            + Avx512BW.MultiplyAddAdjacent(Vector512.Load(mb + 96), Vector512.Create(*(int*)(bst + 6)).AsInt16());
                        Fold(part + 96 + t * 16, m, wm * d0[t * superBlocks + b]);
                    }
                }
                for (int t = 0; t < TokensPerPass && t0 + t < n; t++)
                {
                    Vector512<float> r = Vector512.Load(part + t * 16) - Vector512.Load(part + 96 + t * 16);
                    float* yt = y + (t0 + t) * yStride;
                    if (rows == PanelRows) r.Store(yt);
                    else
                    {
                        r.CopyTo(lane);
                        lane[..rows].CopyTo(new Span<float>(yt, rows));
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Fold(float* p, Vector512<int> s, Vector512<float> scale) =>
        Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(s), scale, Vector512.Load(p)).Store(p);
}
