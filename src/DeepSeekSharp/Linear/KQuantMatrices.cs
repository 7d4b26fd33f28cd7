using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Linear;

/// <summary>Formats whose kernels take activations quantised per 256 (ggml's Q8_K): Q2_K–Q6_K and IQ4_XS.</summary>
internal abstract unsafe class KBlockMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : Matrix(format, rows, cols, data, owner)
{
    private protected int SuperBlocks => Cols / 256;

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        if (UseGemm(n)) a.Widen(n, Q4KGemm.TokenPadding);
        return a;
    }
}

/// <summary>Q4_K in the GGUF block layout (a mapped file, or CPUs without the tile kernels).</summary>
internal sealed unsafe class Q4KMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q4_K, rows, cols, data, owner)
{
    private ReadOnlySpan<BlockQ4K> Row(int r) => new(RowPointer(r), SuperBlocks);

    /// <summary>Unpacking a Q4_K panel costs about twice a Q8_0 one: below ~24 tokens the four-token kernel is faster
    /// (matmul bench). Both give the same bits.</summary>
    private protected override bool UseGemm(int n) => n >= 24 && Q4KGemm.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        if (UseGemm(n))
        {
            Panels<Q4KPanels>(a, y, n, r0, r1, rowStart, rowCount);
            return;
        }
        int superBlocks = SuperBlocks;
        int grouped = Avx2.IsSupported ? n / 4 * 4 : 0;
        Span<float> four = stackalloc float[4];
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<BlockQ4K> row = Row(o);
            for (int t = 0; t < grouped; t += 4)
            {
                Q4K.V256x4(row, a.Q.AsSpan(t * Cols, 4 * Cols), Cols, a.D.AsSpan(t * superBlocks, 4 * superBlocks), superBlocks,
                    a.BlockSum.AsSpan(t * superBlocks * 8, 4 * superBlocks * 8), superBlocks * 8, four);
                for (int k = 0; k < 4; k++) y[(long)(t + k) * rowCount + o - rowStart] = four[k];
            }
            for (int t = grouped; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = Q4K.VecDotQ4KQ8K(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks),
                    a.BlockSum.AsSpan(t * superBlocks * 8, superBlocks * 8));
        }
    }
}

/// <summary>Q5_K in the GGUF block layout (a mapped file, or CPUs without the tile kernels): one token at a time.</summary>
internal sealed unsafe class Q5KMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q5_K, rows, cols, data, owner)
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int superBlocks = SuperBlocks;
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<BlockQ5K> row = new(RowPointer(o), superBlocks);
            for (int t = 0; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = Q5K.VecDotQ5KQ8K(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks),
                    a.BlockSum.AsSpan(t * superBlocks * 8, superBlocks * 8));
        }
    }
}

/// <summary>Q6_K (llama.cpp's choice for the output matrix of a Q4_K_M file).</summary>
internal sealed unsafe class Q6KMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q6_K, rows, cols, data, owner)
{
    private ReadOnlySpan<BlockQ6K> Row(int r) => new(RowPointer(r), SuperBlocks);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        if (Avx2.IsSupported) a.PrepareSums16(n);
        return a;
    }

    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int superBlocks = SuperBlocks;
        if (n == 1 && Avx2.IsSupported)
        {
            // One token (decode): the activations' spans made once, each row's kernel called on them.
            ReadOnlySpan<sbyte> q = a.Q.AsSpan(0, Cols);
            ReadOnlySpan<float> d = a.D.AsSpan(0, superBlocks);
            ReadOnlySpan<short> sums = a.Sums16.AsSpan(0, Cols / 16);
            for (int o = r0; o < r1; o++) y[o - rowStart] = Q6K.V256(Row(o), q, d, sums);
            return;
        }
        int quads = Avx2.IsSupported ? n / 4 * 4 : 0, paired = Avx2.IsSupported ? quads + (n - quads) / 2 * 2 : 0;
        Span<float> results = stackalloc float[4];
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<BlockQ6K> row = Row(o);
            // Four, then two tokens at a time share each block's unpacking (a decode step with drafts, a batch); the
            // same bits.
            for (int t = 0; t < quads; t += 4)
            {
                Q6K.V256x4(row, a.Q.AsSpan(t * Cols, 4 * Cols), Cols, a.D.AsSpan(t * superBlocks, 4 * superBlocks), superBlocks,
                    a.Sums16.AsSpan(t * Cols / 16, 4 * Cols / 16), Cols / 16, results);
                for (int k = 0; k < 4; k++) y[(long)(t + k) * rowCount + o - rowStart] = results[k];
            }
            for (int t = quads; t < paired; t += 2)
            {
                Q6K.V256x2(row, a.Q.AsSpan(t * Cols, 2 * Cols), Cols, a.D.AsSpan(t * superBlocks, 2 * superBlocks), superBlocks,
                    a.Sums16.AsSpan(t * Cols / 16, 2 * Cols / 16), Cols / 16, results);
                y[(long)t * rowCount + o - rowStart] = results[0];
                y[(long)(t + 1) * rowCount + o - rowStart] = results[1];
            }
            for (int t = paired; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = Avx2.IsSupported
                    ? Q6K.V256(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks), a.Sums16.AsSpan(t * Cols / 16, Cols / 16))
                    : Q6K.VecDotQ6KQ8K(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks));
        }
    }
}

/// <summary>Q2_K or Q3_K in the GGUF block layout (<see cref="LowBitKQuants"/>): each row against four tokens at a time,
/// then one, with the activations' sums per 16 for the terms in Σx.</summary>
internal sealed unsafe class LowBitKMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(format, rows, cols, data, owner)
{
    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        a.PrepareSums16(n);
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int superBlocks = SuperBlocks;
        int rowBytes = (int)RowBytes;
        bool q2 = Format == WeightFormat.Q2_K;
        int grouped = Avx2.IsSupported ? n / 4 * 4 : 0;
        Span<float> four = stackalloc float[4];
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<byte> row = new(RowPointer(o), rowBytes);
            // Four tokens at a time share each chunk's codes (a prompt); the same bits as one at a time.
            for (int t = 0; t < grouped; t += 4)
            {
                ReadOnlySpan<sbyte> q = a.Q.AsSpan(t * Cols, 4 * Cols);
                ReadOnlySpan<float> d = a.D.AsSpan(t * superBlocks, 4 * superBlocks);
                ReadOnlySpan<short> sums = a.Sums16.AsSpan(t * Cols / 16, 4 * Cols / 16);
                if (q2) LowBitKQuants.Q2KV256x4(row, q, Cols, d, superBlocks, sums, Cols / 16, four);
                else LowBitKQuants.Q3KV256x4(row, q, Cols, d, superBlocks, sums, Cols / 16, four);
                for (int k = 0; k < 4; k++) y[(long)(t + k) * rowCount + o - rowStart] = four[k];
            }
            for (int t = grouped; t < n; t++)
            {
                ReadOnlySpan<sbyte> q = a.Q.AsSpan(t * Cols, Cols);
                ReadOnlySpan<float> d = a.D.AsSpan(t * superBlocks, superBlocks);
                ReadOnlySpan<short> sums = a.Sums16.AsSpan(t * Cols / 16, Cols / 16);
                y[(long)t * rowCount + o - rowStart] = q2 ? LowBitKQuants.DotQ2K(row, q, d, sums) : LowBitKQuants.DotQ3K(row, q, d, sums);
            }
        }
    }
}

/// <summary>IQ4_XS in the GGUF block layout: each row against each token with <see cref="Iq4Xs"/>.</summary>
internal sealed unsafe class Iq4XsMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.IQ4_XS, rows, cols, data, owner)
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int superBlocks = SuperBlocks;
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<byte> row = new(RowPointer(o), superBlocks * Iq4Xs.BlockBytes);
            for (int t = 0; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = Iq4Xs.Dot(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks));
        }
    }
}
