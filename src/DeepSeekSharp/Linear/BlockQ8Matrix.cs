using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Linear;

/// <summary>Q8_0, and Q4_0 and Q5_0 (llama.cpp's fallbacks for rows that do not fit k-quant blocks, e.g. V2-Lite's
/// 1408-wide expert down projections): integer dot products against activations quantised per 32
/// (<see cref="BlockDots{T}"/>), or from <see cref="GemmMinTokens"/> tokens on the panel kernel
/// (<see cref="BlockGemm{T}"/>).</summary>
internal sealed unsafe class BlockQ8Matrix<T>(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : Matrix(format, rows, cols, data, owner) where T : struct, IBlockCodes
{
    /// <summary>From this many tokens on, rows are unpacked into panels shared by all tokens (<see cref="BlockGemm{T}"/>);
    /// fewer run the row kernels. Both give the same bits for a token.</summary>
    internal const int GemmMinTokens = 8;

    private protected override bool UseGemm(int n) => n >= GemmMinTokens && BlockGemm<T>.IsSupported;

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        if (UseGemm(n))
        {
            if (AvxVnni.IsSupported) a.Pad(n, BlockGemm<T>.TokenPadding); // the byte panels read the codes as they are
            else a.Widen(n, BlockGemm<T>.TokenPadding);
        }
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int blocks = Cols / 32;
        if (UseGemm(n))
        {
            Panels<BlockPanels<T>>(a, y, n, r0, r1, rowStart, rowCount);
            return;
        }
        // Four tokens at a time share each weight row's loads (batched decode); every token gets the same
        // arithmetic as alone, so results do not depend on the batch.
        if (n == 1 && Avx2.IsSupported)
        {
            // One token (decode): the activations' spans made once, each row's kernel called on its pointer.
            ReadOnlySpan<sbyte> q = a.Q.AsSpan(0, Cols);
            ReadOnlySpan<float> d = a.D.AsSpan(0, blocks);
            ReadOnlySpan<short> sums = a.BlockSum.AsSpan(0, blocks);
            for (int o = r0; o < r1; o++) y[o - rowStart] = BlockDots<T>.V256(ref *RowPointer(o), blocks, q, d, sums);
            return;
        }
        if (Avx2.IsSupported && n < GemmMinTokens)
        {
            // A few tokens (a decode step with drafts, a small batch): at most one group of four, one pair and one
            // single token, their activations' spans made once; each row's kernels run while the row is in L1. (A
            // row is about 0.1 µs of work from memory, so slicing spans per row and token group cost a third of it.)
            int quad = n >= 4 ? 4 : 0, pairEnd = n - quad >= 2 ? quad + 2 : quad;
            ReadOnlySpan<sbyte> q4 = a.Q.AsSpan(0, quad * Cols), q2 = a.Q.AsSpan(quad * Cols, (pairEnd - quad) * Cols), q1 = a.Q.AsSpan(pairEnd * Cols, (n - pairEnd) * Cols);
            ReadOnlySpan<float> d4 = a.D.AsSpan(0, quad * blocks), d2 = a.D.AsSpan(quad * blocks, (pairEnd - quad) * blocks), d1 = a.D.AsSpan(pairEnd * blocks, (n - pairEnd) * blocks);
            ReadOnlySpan<short> s4 = a.BlockSum.AsSpan(0, quad * blocks), s2 = a.BlockSum.AsSpan(quad * blocks, (pairEnd - quad) * blocks),
                s1 = a.BlockSum.AsSpan(pairEnd * blocks, (n - pairEnd) * blocks);
            Span<float> out4 = stackalloc float[4];
            for (int o = r0; o < r1; o++)
            {
                ref byte row = ref *RowPointer(o);
                float* yo = y + (o - rowStart);
                if (quad > 0)
                {
                    BlockDots<T>.V256x4(ref row, blocks, q4, Cols, d4, blocks, s4, out4);
                    for (int k = 0; k < 4; k++) yo[(long)k * rowCount] = out4[k];
                }
                if (pairEnd > quad)
                {
                    BlockDots<T>.V256x2(ref row, blocks, q2, Cols, d2, blocks, s2, out4);
                    yo[(long)quad * rowCount] = out4[0];
                    yo[(long)(quad + 1) * rowCount] = out4[1];
                }
                if (pairEnd < n) yo[(long)pairEnd * rowCount] = BlockDots<T>.V256(ref row, blocks, q1, d1, s1);
            }
            return;
        }
        // Then two at a time (a decode step with a speculative draft), then one.
        int grouped = Avx2.IsSupported ? n / 4 * 4 : 0, paired = Avx2.IsSupported ? grouped + (n - grouped) / 2 * 2 : 0;
        Span<float> four = stackalloc float[4];
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<byte> row = RawRow(o);
            for (int t = 0; t < grouped; t += 4)
            {
                BlockDots<T>.V256x4(ref MemoryMarshal.GetReference(row), blocks, a.Q.AsSpan(t * Cols, 4 * Cols), Cols, a.D.AsSpan(t * blocks, 4 * blocks), blocks,
                    a.BlockSum.AsSpan(t * blocks, 4 * blocks), four);
                for (int k = 0; k < 4; k++) y[(long)(t + k) * rowCount + o - rowStart] = four[k];
            }
            for (int t = grouped; t < paired; t += 2)
            {
                BlockDots<T>.V256x2(ref MemoryMarshal.GetReference(row), blocks, a.Q.AsSpan(t * Cols, 2 * Cols), Cols, a.D.AsSpan(t * blocks, 2 * blocks), blocks,
                    a.BlockSum.AsSpan(t * blocks, 2 * blocks), four);
                y[(long)t * rowCount + o - rowStart] = four[0];
                y[(long)(t + 1) * rowCount + o - rowStart] = four[1];
            }
            for (int t = paired; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = BlockDots<T>.Dot(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * blocks, blocks), a.BlockSum.AsSpan(t * blocks, blocks));
        }
    }
}
