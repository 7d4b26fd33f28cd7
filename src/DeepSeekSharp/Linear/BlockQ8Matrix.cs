using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Linear;

/// <summary>Q8_0, and Q4_0, Q5_0 and IQ4_NL (llama.cpp's fallbacks for rows that do not fit k-quant blocks, e.g. V2-Lite's
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
        else if (n >= 3 && BlockDots<T>.CanGroup && Cols >= 256) a.GroupBlocks(n);
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
        // Tokens share each weight row's loads (batched decode, verify passes); every token gets the same arithmetic
        // as alone, so results do not depend on the batch.
        if (n == 1 && Avx2.IsSupported)
        {
            // One token (decode): the activations' spans made once, each row's kernel called on its pointer.
            ReadOnlySpan<sbyte> q = a.Q.AsSpan(0, Cols);
            ReadOnlySpan<float> d = a.D.AsSpan(0, blocks);
            ReadOnlySpan<short> sums = a.BlockSum.AsSpan(0, blocks);
            for (int o = r0; o < r1; o++) y[o - rowStart] = BlockDots<T>.V256(ref *RowPointer(o), blocks, q, d, sums);
            return;
        }
        if (Avx2.IsSupported)
        {
            // More tokens (a decode step with drafts, a batch; a prompt where the panel kernel is not available): groups
            // of up to four, every kernel on a row while it is in L1. Three or four take the grouped kernel where the
            // activations were grouped (Prepare), else four the four-token kernel; two (or the first two of three)
            // the pair kernel, one the one-token kernel. The activations' spans are made once per call: a row is
            // about 0.1 µs of work from memory, so slicing arrays per row and group cost a third of it.
            ReadOnlySpan<sbyte> q = a.Q.AsSpan(0, n * Cols);
            ReadOnlySpan<float> d = a.D.AsSpan(0, n * blocks);
            ReadOnlySpan<short> s = a.BlockSum.AsSpan(0, n * blocks);
            bool grouped = BlockDots<T>.CanGroup && a.IsGrouped(n);
            ReadOnlySpan<sbyte> g = grouped ? a.Grouped.AsSpan(0, n * Cols) : default;
            Span<float> out4 = stackalloc float[4];
            for (int o = r0; o < r1; o++)
            {
                ref byte row = ref *RowPointer(o);
                float* yo = y + (o - rowStart);
                for (int t = 0, k; t < n; t += k)
                {
                    k = Math.Min(4, n - t);
                    if (k >= 3 && grouped)
                        BlockDots<T>.V256Grouped(ref row, blocks, k, g.Slice(t * Cols, k * Cols), q.Slice(t * Cols, k * Cols), Cols, d.Slice(t * blocks, k * blocks),
                            blocks, s.Slice(t * blocks, k * blocks), out4);
                    else if (k == 4)
                        BlockDots<T>.V256x4(ref row, blocks, q.Slice(t * Cols, 4 * Cols), Cols, d.Slice(t * blocks, 4 * blocks), blocks, s.Slice(t * blocks, 4 * blocks), out4);
                    else if (k >= 2)
                    {
                        k = 2;
                        BlockDots<T>.V256x2(ref row, blocks, q.Slice(t * Cols, 2 * Cols), Cols, d.Slice(t * blocks, 2 * blocks), blocks, s.Slice(t * blocks, 2 * blocks), out4);
                    }
                    else out4[0] = BlockDots<T>.V256(ref row, blocks, q.Slice(t * Cols, Cols), d.Slice(t * blocks, blocks), s.Slice(t * blocks, blocks));
                    for (int i = 0; i < k; i++) yo[(long)(t + i) * rowCount] = out4[i];
                }
            }
            return;
        }
        // Without AVX2: the scalar specification, token by token.
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<byte> row = RawRow(o);
            for (int t = 0; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = BlockDots<T>.Dot(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * blocks, blocks), a.BlockSum.AsSpan(t * blocks, blocks));
        }
    }
}

/// <summary>A 32-weight format with a per-block minimum (Q4_1, Q5_1: llama.cpp's fallbacks for rows of Q5_K files that
/// are not whole super-blocks) in the GGUF layout: each row against each token with <see cref="MinBlockDots{T}"/>.</summary>
internal sealed unsafe class MinBlockMatrix<T>(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : Matrix(format, rows, cols, data, owner) where T : struct, IBlockCodes
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int blocks = Cols / 32;
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<byte> row = new(RowPointer(o), blocks * T.Bytes);
            for (int t = 0; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = MinBlockDots<T>.Dot(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * blocks, blocks),
                    a.BlockSum.AsSpan(t * blocks, blocks));
        }
    }
}
