using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DeepSeekSharp.Kernels.Quant;

/// <summary>Activations quantised to 8 bits per block of 32 (as llama.cpp quantises activations for integer dot
/// products): for each block a float scale d = max|x| / 127, codes q = round(x / d) in [-127, 127], and
/// d · Σq (used by formats with block minimums). Buffers grow and are then reused.</summary>
public sealed class QuantizedActivations
{
    public const int Block = 32;

    public sbyte[] Q = [];      // [rows, cols]
    public float[] D = [];      // [rows, cols / 32]    (per-32 mode) or [rows, cols / 256] (per-256 mode)
    public short[] BlockSum = []; // [rows, cols / 32]: Σ q of each 32 (|Σ| ≤ 4064): Q4_K's minimums, Q4_0/Q5_0's code offsets
    public short[] Sums16 = [];   // [rows, cols / 16]: Σ q of each 16 (|Σ| ≤ 2032), Q6_K's offset term (by PrepareSums16)
    public short[] Q16 = [];    // [rows, cols]: Q widened to int16 by Widen (for BlockGemm)
    public sbyte[] Grouped = []; // [rows, cols]: Q with each whole group of eight blocks transposed (GroupBlocks)
    public int Cols { get; private set; }
    /// <summary>Values per scale of the last quantisation: 32, or 256 (<see cref="QuantizeK"/>).</summary>
    public int BlockSize => _block;
    private int _block = Block;
    private int _groupedRows; // rows of Grouped made from the current codes (0 after each quantisation)

    /// <summary>Fills <see cref="Grouped"/> for the first <paramref name="rows"/> rows of 32-value blocks: in each whole
    /// group of eight blocks, four-byte group q of block j moves to (8q + j) · 4, so that 32 bytes hold group q of all
    /// eight blocks (against codes transposed the same way, <c>vpdpbusd</c> then leaves each block's sum in its own
    /// lane: <see cref="BlockDots{T}.V256Grouped"/>). Blocks past the last whole group keep their places.</summary>
    public void GroupBlocks(int rows)
    {
        if (_block != Block) throw new InvalidOperationException("grouping needs activations quantised per 32");
        int count = rows * Cols;
        if (Grouped.Length < count) Grouped = new sbyte[count];
        ReadOnlySpan<int> src = System.Runtime.InteropServices.MemoryMarshal.Cast<sbyte, int>(Q.AsSpan(0, count));
        Span<int> dst = System.Runtime.InteropServices.MemoryMarshal.Cast<sbyte, int>(Grouped.AsSpan(0, count));
        int perRow = Cols / 4, whole = Cols / 256 * 64;
        for (int r = 0; r < rows; r++)
        {
            int row = r * perRow;
            for (int g = 0; g < whole; g += 64)
                for (int j = 0; j < 8; j++)
                    for (int q = 0; q < 8; q++)
                        dst[row + g + 8 * q + j] = src[row + g + 8 * j + q];
            src.Slice(row + whole, perRow - whole).CopyTo(dst.Slice(row + whole, perRow - whole));
        }
        _groupedRows = rows;
    }

    /// <summary>Whether <see cref="Grouped"/> holds the current codes of at least <paramref name="rows"/> rows.</summary>
    public bool IsGrouped(int rows) => _groupedRows >= rows;

    /// <summary>Fills <see cref="Sums16"/> for the first <paramref name="rows"/> rows: Q6_K's kernel (codes stored as
    /// q + 32) takes 32 · Σ_j sc_j · Σx_j off each block with them instead of subtracting per weight.</summary>
    public void PrepareSums16(int rows)
    {
        int sums = rows * Cols / 16;
        if (Sums16.Length < sums) Sums16 = new short[sums];
        Sums16Of(Q.AsSpan(0, 16 * sums), Sums16.AsSpan(0, sums));
    }

    /// <summary>dst[j] = Σ q[16j .. 16j + 15].</summary>
    internal static void Sums16Of(ReadOnlySpan<sbyte> q, Span<short> dst)
    {
        for (int j = 0; j < dst.Length; j++)
        {
            int sum = 0;
            foreach (sbyte v in q.Slice(16 * j, 16)) sum += v;
            dst[j] = (short)sum;
        }
    }

    /// <summary>Fills <see cref="Q16"/> with the first <paramref name="rows"/> rows of <see cref="Q"/> as int16,
    /// followed by <paramref name="padRows"/> rows of zero codes, scales and block sums for kernels that run whole
    /// passes of tokens.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Widen(int rows, int padRows)
    {
        int count = rows * Cols;
        if (Q16.Length < count + padRows * Cols) Q16 = new short[count + padRows * Cols];
        Q16.AsSpan(count, padRows * Cols).Clear();
        PadScales(rows, padRows);
        int i = 0;
        if (Avx512BW.IsSupported)
            for (; i + 32 <= count; i += 32)
                Avx512BW.ConvertToVector512Int16(Vector256.Create(Q.AsSpan(i, 32))).CopyTo(Q16.AsSpan(i, 32));
        for (; i < count; i++) Q16[i] = Q[i];
    }

    /// <summary>Follows the first <paramref name="rows"/> rows of <see cref="Q"/>, <see cref="D"/> and
    /// <see cref="BlockSum"/> with <paramref name="padRows"/> rows of zeros, for kernels that run whole passes of
    /// tokens on the codes as they are.</summary>
    public void Pad(int rows, int padRows)
    {
        int count = rows * Cols;
        if (Q.Length < count + padRows * Cols) Array.Resize(ref Q, count + padRows * Cols);
        Q.AsSpan(count, padRows * Cols).Clear();
        PadScales(rows, padRows);
    }

    private void PadScales(int rows, int padRows)
    {
        int blocks = rows * Cols / _block, padBlocks = padRows * Cols / _block;
        if (D.Length < blocks + padBlocks) Array.Resize(ref D, blocks + padBlocks);
        D.AsSpan(blocks, padBlocks).Clear();
        int sums = rows * Cols / Block, padSums = padRows * Cols / Block;
        if (BlockSum.Length < sums + padSums) Array.Resize(ref BlockSum, sums + padSums);
        BlockSum.AsSpan(sums, padSums).Clear();
    }

    /// <summary>Grows the buffers to hold <paramref name="rows"/> × <paramref name="cols"/> activations now, so a later
    /// <see cref="Quantize(ReadOnlySpan{float}, int, int)"/> or <see cref="QuantizeK"/> of at most that size (and
    /// <see cref="PrepareSums16"/>) allocates nothing.</summary>
    public void Reserve(int rows, int cols)
    {
        long n = (long)rows * cols;
        if (Q.Length < n) Q = new sbyte[n];
        if (D.Length < n / Block) D = new float[n / Block];
        if (BlockSum.Length < n / Block) BlockSum = new short[n / Block];
        if (Sums16.Length < n / 16) Sums16 = new short[n / 16];
        if (AvxVnni.IsSupported && Grouped.Length < n) Grouped = new sbyte[n]; // GroupBlocks runs only there
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Quantize(ReadOnlySpan<float> x, int rows, int cols)
    {
        if (cols % Block != 0) throw new ArgumentException($"cols ({cols}) must be a multiple of {Block}", nameof(cols));
        Quantize(x, rows, cols, Block);
    }

    /// <summary>One scale per 256 values (ggml's Q8_K), with Σq per 32 kept for formats with block minimums
    /// (Q4_K): sub-block scales can then be applied in integer arithmetic.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void QuantizeK(ReadOnlySpan<float> x, int rows, int cols)
    {
        if (cols % 256 != 0) throw new ArgumentException($"cols ({cols}) must be a multiple of 256", nameof(cols));
        Quantize(x, rows, cols, 256);
    }

    private unsafe void Quantize(ReadOnlySpan<float> x, int rows, int cols, int block)
    {
        if (x.Length < (long)rows * cols) ThrowHelper.TooShort(nameof(x), (long)rows * cols, x.Length);
        int blocks = rows * cols / block;
        if (Q.Length < rows * cols) Q = new sbyte[rows * cols];
        if (D.Length < blocks) D = new float[blocks];
        if (BlockSum.Length < rows * cols / Block) BlockSum = new short[rows * cols / Block];
        Cols = cols;
        _block = block;
        _groupedRows = 0;
        WorkerPool pool = WorkerPool.Shared;
        if (rows < ParallelRows || pool.Threads == 1)
        {
            QuantizeRows(x, 0, rows);
            return;
        }
        // A prompt's activations: rows split between threads (each row's codes are the same whoever computes them).
        fixed (float* px = x)
        {
            QuantizeJob job = QuantizeJob.ForThisThread;
            job.Target = this;
            job.X = px;
            job.Rows = rows;
            pool.Run(job, (rows + ParallelRows - 1) / ParallelRows);
            job.Target = null;
        }
    }

    /// <summary>Rows per chunk when a quantisation is split between threads (fewer rows run on the calling thread).</summary>
    private const int ParallelRows = 16;

    private sealed unsafe class QuantizeJob : PoolJob
    {
        [ThreadStatic] private static QuantizeJob? _mine;
        public static QuantizeJob ForThisThread => _mine ??= new QuantizeJob();
        public QuantizedActivations? Target;
        public float* X;
        public int Rows;

        public override void Execute(int chunk)
        {
            int r0 = chunk * ParallelRows, r1 = Math.Min(Rows, r0 + ParallelRows), cols = Target!.Cols;
            Target.QuantizeRows(new ReadOnlySpan<float>(X, Rows * cols), r0, r1);
        }
    }

    /// <summary>Codes, scales and per-32 sums of rows [r0, r1).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void QuantizeRows(ReadOnlySpan<float> x, int r0, int r1)
    {
        int block = _block, perRow = Cols / block;
        for (int b = r0 * perRow; b < r1 * perRow; b++)
        {
            ReadOnlySpan<float> v = x.Slice(b * block, block);
            Span<sbyte> q = Q.AsSpan(b * block, block);
            float amax = Avx2.IsSupported ? MaxAbsV256(v) : Vector128.IsHardwareAccelerated ? MaxAbsV128(v) : MaxAbs(v);
            float d = amax / 127f, inv = d > 0 ? 1f / d : 0f;
            if (Avx2.IsSupported) RoundV256(v, inv, q);
            else if (Vector128.IsHardwareAccelerated) RoundV128(v, inv, q);
            else Round(v, inv, q);
            D[b] = d;
        }
        int sumsPerRow = Cols / Block;
        for (int b = r0 * sumsPerRow; b < r1 * sumsPerRow; b++) BlockSum[b] = SumOf(Q.AsSpan(b * Block, Block));
    }

    /// <summary>Σ of one block's 32 codes (what <see cref="BlockSum"/> holds per block).</summary>
    internal static short SumOf(ReadOnlySpan<sbyte> block)
    {
        int sum = 0;
        if (Avx2.IsSupported)
            sum = Vector256.Sum(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.Create((byte)1), Vector256.Create(block)), Vector256.Create((short)1)));
        else if (Vector128.IsHardwareAccelerated)
        {
            // 32 codes of at most 128 in magnitude: every 16-bit partial sum is exact.
            Vector128<sbyte> a = Vector128.Create(block), b = Vector128.Create(block[16..]);
            sum = Vector128.Sum((Vector128.WidenLower(a) + Vector128.WidenUpper(a)) + (Vector128.WidenLower(b) + Vector128.WidenUpper(b)));
        }
        else foreach (sbyte q in block[..Block]) sum += q;
        return (short)sum;
    }

    /// <summary>The specification: q = round-half-even(v · inv), the int32 cast to a byte.</summary>
    internal static void Round(ReadOnlySpan<float> v, float inv, Span<sbyte> q)
    {
        for (int i = 0; i < v.Length; i++) q[i] = (sbyte)(int)MathF.Round(v[i] * inv, MidpointRounding.ToEven);
    }

    /// <summary><see cref="Round"/> 16 at a time in 128-bit vectors (ARM64, x86 without AVX2): the same products and
    /// rounding; |v · inv| ≤ 127 (rounded) fits a byte, so narrowing drops nothing.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static void RoundV128(ReadOnlySpan<float> v, float inv, Span<sbyte> q)
    {
        Vector128<float> s = Vector128.Create(inv);
        for (int i = 0; i < v.Length; i += 16)
        {
            Vector128<int> i0 = Vector128.ConvertToInt32(Vector128.Round(Vector128.Create(v.Slice(i, 4)) * s));
            Vector128<int> i1 = Vector128.ConvertToInt32(Vector128.Round(Vector128.Create(v.Slice(i + 4, 4)) * s));
            Vector128<int> i2 = Vector128.ConvertToInt32(Vector128.Round(Vector128.Create(v.Slice(i + 8, 4)) * s));
            Vector128<int> i3 = Vector128.ConvertToInt32(Vector128.Round(Vector128.Create(v.Slice(i + 12, 4)) * s));
            Vector128.Narrow(Vector128.Narrow(i0, i1), Vector128.Narrow(i2, i3)).CopyTo(q.Slice(i, 16));
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float MaxAbsV128(ReadOnlySpan<float> v)
    {
        Vector128<float> m = Vector128<float>.Zero;
        for (int i = 0; i < v.Length; i += 4) m = Vector128.Max(m, Vector128.Abs(Vector128.Create(v.Slice(i, 4))));
        return MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3]));
    }

    internal static float MaxAbs(ReadOnlySpan<float> v)
    {
        float amax = 0;
        foreach (float f in v) amax = MathF.Max(amax, MathF.Abs(f));
        return amax;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static float MaxAbsV256(ReadOnlySpan<float> v)
    {
        Vector256<float> m = Vector256<float>.Zero;
        for (int i = 0; i < v.Length; i += 8) m = Vector256.Max(m, Vector256.Abs(Vector256.Create(v.Slice(i, 8))));
        Vector128<float> h = Vector128.Max(m.GetLower(), m.GetUpper());
        h = Vector128.Max(h, Vector128.Shuffle(h, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(h[0], h[1]);
    }

    /// <summary>q = round-half-even(v · inv), 32 at a time: the same products and rounding as the scalar loop.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static void RoundV256(ReadOnlySpan<float> v, float inv, Span<sbyte> q)
    {
        Vector256<float> s = Vector256.Create(inv);
        for (int i = 0; i < v.Length; i += 32)
        {
            Vector256<int> i0 = Avx.ConvertToVector256Int32(Vector256.Round(Vector256.Create(v.Slice(i, 8)) * s));
            Vector256<int> i1 = Avx.ConvertToVector256Int32(Vector256.Round(Vector256.Create(v.Slice(i + 8, 8)) * s));
            Vector256<int> i2 = Avx.ConvertToVector256Int32(Vector256.Round(Vector256.Create(v.Slice(i + 16, 8)) * s));
            Vector256<int> i3 = Avx.ConvertToVector256Int32(Vector256.Round(Vector256.Create(v.Slice(i + 24, 8)) * s));
            Vector256<sbyte> packed = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(i0, i1), Avx2.PackSignedSaturate(i2, i3));
            Avx2.PermuteVar8x32(packed.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte().CopyTo(q.Slice(i, 32));
        }
    }
}
