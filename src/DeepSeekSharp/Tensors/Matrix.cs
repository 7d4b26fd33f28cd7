using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Tensors;

/// <summary>How a weight matrix is stored in memory.</summary>
public enum WeightFormat { F32, BF16, Q8_0, Q4_K, F16, FP8, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS }

/// <summary>The GGUF (ggml) type of each block format and back.</summary>
public static class WeightFormats
{
    public static GgmlType ToGgml(this WeightFormat f) => f switch
    {
        WeightFormat.F32 => GgmlType.F32, WeightFormat.BF16 => GgmlType.BF16, WeightFormat.F16 => GgmlType.F16,
        WeightFormat.Q8_0 => GgmlType.Q8_0, WeightFormat.Q4_K => GgmlType.Q4_K, WeightFormat.Q6_K => GgmlType.Q6_K,
        WeightFormat.Q4_0 => GgmlType.Q4_0, WeightFormat.Q4_1 => GgmlType.Q4_1, WeightFormat.Q5_0 => GgmlType.Q5_0,
        WeightFormat.Q5_1 => GgmlType.Q5_1, WeightFormat.Q2_K => GgmlType.Q2_K, WeightFormat.Q3_K => GgmlType.Q3_K,
        WeightFormat.Q5_K => GgmlType.Q5_K, WeightFormat.IQ4_NL => GgmlType.IQ4_NL, WeightFormat.IQ4_XS => GgmlType.IQ4_XS,
        _ => throw new ArgumentOutOfRangeException(nameof(f), f, "FP8 with block scales has no GGUF type"),
    };

    public static WeightFormat FromGgml(GgmlType t) => t switch
    {
        GgmlType.F32 => WeightFormat.F32, GgmlType.BF16 => WeightFormat.BF16, GgmlType.F16 => WeightFormat.F16,
        GgmlType.Q8_0 => WeightFormat.Q8_0, GgmlType.Q4_K => WeightFormat.Q4_K, GgmlType.Q6_K => WeightFormat.Q6_K,
        GgmlType.Q4_0 => WeightFormat.Q4_0, GgmlType.Q4_1 => WeightFormat.Q4_1, GgmlType.Q5_0 => WeightFormat.Q5_0,
        GgmlType.Q5_1 => WeightFormat.Q5_1, GgmlType.Q2_K => WeightFormat.Q2_K, GgmlType.Q3_K => WeightFormat.Q3_K,
        GgmlType.Q5_K => WeightFormat.Q5_K, GgmlType.IQ4_NL => WeightFormat.IQ4_NL, GgmlType.IQ4_XS => WeightFormat.IQ4_XS,
        _ => throw GgmlBlocks.Unsupported(t),
    };
}

/// <summary>A weight matrix [Rows, Cols] (a linear layer's [out, in], y = W x) in one storage format, rows contiguous
/// in memory that never moves: aligned native memory, or a memory-mapped file used in place. Every format gives the
/// same operations: a batched product, row dequantisation (embedding lookup), and row accumulation (absorbed MLA).
/// Each output element is computed by one thread with a fixed summation order, so results do not depend on the
/// thread count, the batch a row sits in, or where the activations lie in memory.</summary>
public abstract unsafe class Matrix : IDisposable
{
    private readonly byte* _data;
    private readonly IDisposable? _owner;

    protected Matrix(int rows, int cols, long rowBytes, byte* data, IDisposable? owner)
    {
        Rows = rows;
        Cols = cols;
        RowBytes = rowBytes;
        _data = data;
        _owner = owner;
    }

    public int Rows { get; }
    public int Cols { get; }
    public long RowBytes { get; }
    /// <summary>Bytes the matrix occupies in memory.</summary>
    public virtual long Bytes => RowBytes * Rows;
    public abstract WeightFormat Format { get; }

    protected byte* RowPointer(int r) => _data + r * RowBytes;

    /// <summary>The bytes of row r in the format's file layout, where the matrix keeps that layout in memory.</summary>
    public virtual ReadOnlySpan<byte> RawRow(int r) => new(RowPointer(r), checked((int)RowBytes));

    /// <summary>Sets rows [r0, r0 + count) from their bytes in the format's file layout (<see cref="RowBytes"/> per row),
    /// which <paramref name="fill"/> writes into the span it is given: the matrix's own memory where it keeps that
    /// layout, so a file is read straight in.</summary>
    public virtual void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        CheckRowRange(r0, count);
        fill(new Span<byte>(RowPointer(r0), checked((int)(RowBytes * count))));
    }

    private protected void CheckRowRange(int r0, int count)
    {
        if ((uint)r0 > (uint)Rows || count < 0 || count > Rows - r0) throw new ArgumentOutOfRangeException(nameof(count));
    }

    /// <summary>Writes row r as float32.</summary>
    public abstract void DequantizeRow(int r, Span<float> dst);

    /// <summary>Stores a float32 row into row r, quantising as the format requires (used while loading).</summary>
    public abstract void SetRow(int r, ReadOnlySpan<float> values);

    /// <summary>y[t, o − rowStart] = W[o] · x[t] for o in [rowStart, rowStart + rowCount), t in [0, n).</summary>
    /// <param name="x">[n, Cols]</param>
    /// <param name="y">[n, rowCount]</param>
    public void Forward(ReadOnlySpan<float> x, Span<float> y, int n, int rowStart = 0, int rowCount = -1)
    {
        if (rowCount < 0) rowCount = Rows - rowStart;
        if ((uint)rowStart > (uint)Rows || rowCount > Rows - rowStart) throw new ArgumentOutOfRangeException(nameof(rowCount));
        if (x.Length < (long)n * Cols) ThrowHelper.TooShort(nameof(x), (long)n * Cols, x.Length);
        if (y.Length < (long)n * rowCount) ThrowHelper.TooShort(nameof(y), (long)n * rowCount, y.Length);
        if (n == 0 || rowCount == 0) return;
        QuantizedActivations? act = Prepare(x, n);
        fixed (float* px = x, py = y)
        {
            MatMulJob job = MatMulJob.ForThisThread;
            job.Set(this, act, px, py, n, rowStart, rowCount);
            long work = (long)n * rowCount * Cols;
            int threads = WorkerPool.Shared.Threads;
            if (work < 1 << 15 || threads == 1) job.Rows(0, rowCount);
            else
            {
                int chunkRows = Math.Max(4, (rowCount + threads * 16 - 1) / (threads * 16));
                int unit = RowUnit(n);
                chunkRows = (chunkRows + unit - 1) / unit * unit;
                job.ChunkRows = chunkRows;
                WorkerPool.Shared.Run(job, (rowCount + chunkRows - 1) / chunkRows);
            }
            job.Clear();
        }
    }

    /// <summary>Prepares the activations for <see cref="DotRows"/> on the calling thread: integer formats quantise
    /// them to 8 bits per block of 32 (into that thread's scratch); float formats use them as they are.</summary>
    private protected virtual QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n) => null;

    /// <summary>The panel kernels' loop over rows [r0, r1): up to 256 KB of 16-row panels are unpacked at once, then
    /// tokens pass over them in chunks of about 192 KB of activations, so both stay in L2 (one panel over all of a
    /// long prompt streamed the activations from L3: -30%).</summary>
    private protected void PanelProduct<TK>(QuantizedActivations a, float* y, int n, int r0, int r1, int rowStart, int rowCount)
        where TK : IPanelKernel
    {
        const int panelRows = 16;
        int shorts = TK.PanelShorts(Cols), floats = TK.ScaleFloats(Cols);
        int group = Math.Clamp((256 << 10) / (shorts * 2), 1, (r1 - r0 + panelRows - 1) / panelRows);
        int chunk = Math.Max(6, (192 << 10) / (Cols * 2) / 6 * 6);
        Span<short> panels = GemmScratch.Panel(shorts * group);
        Span<float> scales = GemmScratch.Scales(floats * group), partials = GemmScratch.Partials;
        for (int p0 = r0; p0 < r1; p0 += panelRows * group)
        {
            int count = Math.Min(group, (r1 - p0 + panelRows - 1) / panelRows);
            for (int i = 0; i < count; i++)
            {
                TK.Pack(ref *RowPointer(p0 + i * panelRows), RowBytes, Math.Min(panelRows, r1 - p0 - i * panelRows), Cols,
                    panels.Slice(i * shorts, shorts), scales.Slice(i * floats, floats));
            }
            for (int t0 = 0; t0 < n; t0 += chunk)
            {
                int tn = Math.Min(chunk, n - t0);
                for (int i = 0; i < count; i++)
                {
                    TK.Multiply(panels.Slice(i * shorts, shorts), scales.Slice(i * floats, floats), Cols, Math.Min(panelRows, r1 - p0 - i * panelRows),
                        a, t0, tn, partials, y + (long)t0 * rowCount + (p0 + i * panelRows - rowStart), rowCount);
                }
            }
        }
    }

    /// <summary>Rows a kernel handles together for <paramref name="n"/> tokens (chunks handed to threads are multiples).</summary>
    private protected virtual int RowUnit(int n) => UseGemm(n) ? 16 : 1;

    /// <summary>Whether <paramref name="n"/> tokens go through this format's panel kernel (see <see cref="PanelProduct"/>).</summary>
    private protected virtual bool UseGemm(int n) => false;

    /// <summary>y[t, o − rowStart] for o in [r0, r1): the per-format inner kernel (one thread).</summary>
    private protected abstract void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount);

    /// <summary>y += Σ_i x[i] · W[rowStart + i] (a transposed product over a row range).</summary>
    public virtual void AccumulateRows(int rowStart, ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length != Cols) ThrowHelper.LengthMismatch(nameof(y), Cols, y.Length);
        Span<float> row = Scratch.Row(Cols);
        for (int i = 0; i < x.Length; i++)
        {
            DequantizeRow(rowStart + i, row);
            Axpy.Compute(row, x[i], y);
        }
    }

    public void Dispose()
    {
        _owner?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Makes this thread's scratch for products of up to <paramref name="tokens"/> tokens with matrices up to
    /// <paramref name="cols"/> wide (the product's job, quantised activations, a dequantised row), so the first such
    /// product on this thread — e.g. a worker's first nested expert or attention product, whenever it comes —
    /// allocates nothing.</summary>
    internal static void PrepareThisThread(int tokens, int cols)
    {
        _ = MatMulJob.ForThisThread;
        Scratch.Activations.Reserve(tokens, cols);
        Scratch.Row(cols);
    }

    /// <summary>Per-thread scratch, grown and then reused (no allocation in steady state).</summary>
    private protected static class Scratch
    {
        [ThreadStatic] private static float[]? _row;
        [ThreadStatic] private static QuantizedActivations? _act;

        public static Span<float> Row(int n)
        {
            if (_row is null || _row.Length < n) _row = new float[n];
            return _row.AsSpan(0, n);
        }

        public static QuantizedActivations Activations => _act ??= new QuantizedActivations();

        [ThreadStatic] private static byte[]? _stored;

        /// <summary>A row in its file layout (for formats kept otherwise in memory).</summary>
        public static Span<byte> StoredRow(int bytes)
        {
            if (_stored is null || _stored.Length < bytes) _stored = new byte[bytes];
            return _stored.AsSpan(0, bytes);
        }
    }

    private sealed class MatMulJob : PoolJob
    {
        [ThreadStatic] private static MatMulJob? _mine;
        public static MatMulJob ForThisThread => _mine ??= new MatMulJob();

        private Matrix? _m;
        private QuantizedActivations? _act;
        private float* _x, _y;
        private int _n, _rowStart, _rowCount;
        public int ChunkRows;

        public void Set(Matrix m, QuantizedActivations? act, float* x, float* y, int n, int rowStart, int rowCount)
        {
            (_m, _act, _n, _rowStart, _rowCount) = (m, act, n, rowStart, rowCount);
            _x = x;
            _y = y;
        }

        public void Clear() => (_m, _act) = (null, null);

        public void Rows(int r0, int r1) => _m!.DotRows(_act, _x, _y, _n, _rowStart + r0, _rowStart + r1, _rowStart, _rowCount);

        public override void Execute(int chunk) => Rows(chunk * ChunkRows, Math.Min((chunk + 1) * ChunkRows, _rowCount));
    }

    /// <summary>Allocates a matrix of a format in aligned native memory (contents to be set with <see cref="SetRow"/>).
    /// Q4_K is kept as sixteen interleaved rows (<see cref="Q4KTiles"/>) where the CPU has the kernels for it.</summary>
    public static Matrix Create(WeightFormat format, int rows, int cols) => Create(format, rows, cols, tiles: true);

    /// <summary><see cref="Create(WeightFormat, int, int)"/>; <paramref name="tiles"/> false keeps every format in its
    /// file layout (as a mapped file is used), for tests of those kernels.</summary>
    internal static Matrix Create(WeightFormat format, int rows, int cols, bool tiles)
    {
        if (tiles && format == WeightFormat.Q4_K && Q4KTiles.IsSupported) return Q4KTiledMatrix.Create(rows, (int)CheckBlocks(cols, 256, format));
        long rowBytes = RowBytesOf(format, cols);
        var buffer = new NativeBuffer(rowBytes * rows);
        return Wrap(format, rows, cols, buffer.Pointer, buffer);
    }

    /// <summary>A matrix over existing memory (e.g. a mapped file); <paramref name="owner"/> is disposed with it.</summary>
    public static Matrix Wrap(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner) => format switch
    {
        WeightFormat.F32 => new F32Matrix(rows, cols, data, owner),
        WeightFormat.BF16 => new Bf16Matrix(rows, cols, data, owner),
        WeightFormat.Q8_0 => new BlockQ8Matrix<Q8_0Codes>(format, rows, cols, data, owner),
        WeightFormat.Q4_K => new Q4KMatrix(rows, cols, data, owner),
        WeightFormat.F16 => new F16Matrix(rows, cols, data, owner),
        WeightFormat.Q6_K => new Q6KMatrix(rows, cols, data, owner),
        WeightFormat.Q4_0 => new BlockQ8Matrix<Q4_0Codes>(format, rows, cols, data, owner),
        WeightFormat.Q5_0 => new BlockQ8Matrix<Q5_0Codes>(format, rows, cols, data, owner),
        WeightFormat.Q4_1 or WeightFormat.Q5_1 or WeightFormat.Q2_K or WeightFormat.Q3_K or WeightFormat.Q5_K or WeightFormat.IQ4_NL or WeightFormat.IQ4_XS
            => new GgmlRowMatrix(format, rows, cols, data, owner),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "FP8 matrices are made with CreateFp8 (they need block scales)"),
    };

    /// <summary>An FP8 E4M3 matrix over raw codes with one float scale per <paramref name="block"/> tile
    /// (DeepSeek-V3's weight_scale_inv: W[r, c] = fp8(q[r, c]) · scale[r / br, c / bc]).</summary>
    public static Matrix CreateFp8(int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner) =>
        new Fp8Matrix(rows, cols, codes, scales, block, owner);

    public static long RowBytesOf(WeightFormat format, int cols) => format switch
    {
        WeightFormat.F32 => cols * 4L,
        WeightFormat.BF16 => cols * 2L,
        WeightFormat.Q8_0 => CheckBlocks(cols, 32, format) / 32 * BlockQ8_0.Bytes,
        WeightFormat.Q4_K => CheckBlocks(cols, 256, format) / 256 * BlockQ4K.Bytes,
        WeightFormat.F16 => cols * 2L,
        WeightFormat.FP8 => cols,
        _ => CheckBlocks(cols, GgmlBlocks.BlockSize(format.ToGgml()), format) / GgmlBlocks.BlockSize(format.ToGgml()) * GgmlBlocks.TypeSize(format.ToGgml()),
    };

    /// <summary>Whether a row of <paramref name="cols"/> values can be stored in <paramref name="format"/>.</summary>
    public static bool Supports(WeightFormat format, int cols) => format switch
    {
        WeightFormat.Q8_0 => cols % 32 == 0,
        WeightFormat.FP8 => false, // made only from checkpoint codes and scales, never by conversion
        _ => cols % GgmlBlocks.BlockSize(format.ToGgml()) == 0,
    };

    private static long CheckBlocks(int cols, int block, WeightFormat f) =>
        cols % block == 0 ? cols : throw new ArgumentException($"{f} stores rows in blocks of {block}; {cols} columns do not divide");

    /// <summary>A float32 matrix from values (tests, small weights).</summary>
    public static Matrix FromValues(int rows, int cols, ReadOnlySpan<float> values, WeightFormat format = WeightFormat.F32) =>
        FromValues(rows, cols, values, format, tiles: true);

    internal static Matrix FromValues(int rows, int cols, ReadOnlySpan<float> values, WeightFormat format, bool tiles)
    {
        Matrix m = Create(format, rows, cols, tiles);
        for (int r = 0; r < rows; r++) m.SetRow(r, values.Slice(r * cols, cols));
        return m;
    }
}

internal sealed unsafe class F32Matrix(int rows, int cols, byte* data, IDisposable? owner) : Matrix(rows, cols, RowBytesOf(WeightFormat.F32, cols), data, owner)
{
    public override WeightFormat Format => WeightFormat.F32;
    private ReadOnlySpan<float> Row(int r) => new(RowPointer(r), Cols);
    public override void DequantizeRow(int r, Span<float> dst) => Row(r).CopyTo(dst);
    public override void SetRow(int r, ReadOnlySpan<float> values) => values.CopyTo(new Span<float>(RowPointer(r), Cols));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<float> row = Row(o);
            for (int t = 0; t < n; t++) y[(long)t * rowCount + o - rowStart] = Dot.Compute(row, new ReadOnlySpan<float>(x + (long)t * Cols, Cols));
        }
    }

    public override void AccumulateRows(int rowStart, ReadOnlySpan<float> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) Axpy.Compute(Row(rowStart + i), x[i], y);
    }
}

internal sealed unsafe class Bf16Matrix(int rows, int cols, byte* data, IDisposable? owner) : Matrix(rows, cols, RowBytesOf(WeightFormat.BF16, cols), data, owner)
{
    public override WeightFormat Format => WeightFormat.BF16;
    private ReadOnlySpan<ushort> Row(int r) => new(RowPointer(r), Cols);

    public override void DequantizeRow(int r, Span<float> dst)
    {
        ReadOnlySpan<ushort> row = Row(r);
        for (int i = 0; i < row.Length; i++) dst[i] = NumberFormats.BF16ToFloat(row[i]);
    }

    public override void SetRow(int r, ReadOnlySpan<float> values)
    {
        var row = new Span<ushort>(RowPointer(r), Cols);
        for (int i = 0; i < row.Length; i++) row[i] = NumberFormats.FloatToBF16(values[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<ushort> row = Row(o);
            for (int t = 0; t < n; t++) y[(long)t * rowCount + o - rowStart] = Bf16Dot.Compute(row, new ReadOnlySpan<float>(x + (long)t * Cols, Cols));
        }
    }
}

/// <summary>Q8_0, and Q4_0 and Q5_0 (llama.cpp's fallbacks for rows that do not fit k-quant blocks, e.g. V2-Lite's
/// 1408-wide expert down projections): integer dot products against activations quantised per 32
/// (<see cref="BlockDots{T}"/>).</summary>
internal sealed unsafe class BlockQ8Matrix<T>(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : Matrix(rows, cols, RowBytesOf(format, cols), data, owner) where T : struct, IBlockCodes
{
    private readonly GgmlType _type = format.ToGgml();
    public override WeightFormat Format => WeightFormats.FromGgml(_type);
    public override void DequantizeRow(int r, Span<float> dst) => GgmlBlocks.Dequantize(_type, RawRow(r), dst);
    public override void SetRow(int r, ReadOnlySpan<float> values) =>
        GgmlBlocks.Quantize(_type, values, new Span<byte>(RowPointer(r), checked((int)RowBytes)));

    /// <summary>From this many tokens on, rows are unpacked into panels shared by all tokens (<see cref="BlockGemm{T}"/>);
    /// fewer run the row kernels. Both give the same bits for a token.</summary>
    internal const int GemmMinTokens = 8;

    private protected override bool UseGemm(int n) => n >= GemmMinTokens && BlockGemm<T>.IsSupported;

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n)
    {
        QuantizedActivations a = Scratch.Activations;
        a.Quantize(x, n, Cols);
        if (UseGemm(n)) a.Widen(n, BlockGemm<T>.TokenPadding);
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int blocks = Cols / 32;
        if (UseGemm(n))
        {
            PanelProduct<BlockPanels<T>>(a, y, n, r0, r1, rowStart, rowCount);
            return;
        }
        // Four tokens at a time share each weight row's loads (batched decode); every token gets the same
        // arithmetic as alone, so results do not depend on the batch.
        if (n == 1 && System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            // One token (decode): the activations' spans made once, each row's kernel called on its pointer.
            ReadOnlySpan<sbyte> q = a.Q.AsSpan(0, Cols);
            ReadOnlySpan<float> d = a.D.AsSpan(0, blocks);
            ReadOnlySpan<short> sums = a.BlockSum.AsSpan(0, blocks);
            for (int o = r0; o < r1; o++) y[o - rowStart] = BlockDots<T>.V256(ref *RowPointer(o), blocks, q, d, sums);
            return;
        }
        int grouped = System.Runtime.Intrinsics.X86.Avx2.IsSupported ? n / 4 * 4 : 0;
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
            for (int t = grouped; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = BlockDots<T>.Dot(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * blocks, blocks), a.BlockSum.AsSpan(t * blocks, blocks));
        }
    }
}

/// <summary>Formats whose kernels take activations quantised per 256 (ggml's Q8_K): Q4_K, Q6_K.</summary>
internal abstract unsafe class KBlockMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : Matrix(rows, cols, RowBytesOf(format, cols), data, owner)
{
    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n)
    {
        QuantizedActivations a = Scratch.Activations;
        a.QuantizeK(x, n, Cols);
        if (UseGemm(n)) a.Widen(n, Q4KGemm.TokenPadding);
        return a;
    }
}

internal sealed unsafe class Q4KMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q4_K, rows, cols, data, owner)
{
    public override WeightFormat Format => WeightFormat.Q4_K;
    private ReadOnlySpan<BlockQ4K> Row(int r) => new(RowPointer(r), Cols / 256);
    public override void DequantizeRow(int r, Span<float> dst) => Q4K.DequantizeRow(Row(r), dst);
    public override void SetRow(int r, ReadOnlySpan<float> values) => Q4K.QuantizeRow(values, new Span<BlockQ4K>(RowPointer(r), Cols / 256));

    /// <summary>Unpacking a Q4_K panel costs about twice a Q8_0 one: below ~24 tokens the four-token kernel is faster
    /// (matmul bench). Both give the same bits.</summary>
    private protected override bool UseGemm(int n) => n >= 24 && Q4KGemm.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        if (UseGemm(n))
        {
            PanelProduct<Q4KPanels>(a, y, n, r0, r1, rowStart, rowCount);
            return;
        }
        int superBlocks = Cols / 256;
        int grouped = System.Runtime.Intrinsics.X86.Avx2.IsSupported ? n / 4 * 4 : 0;
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

/// <summary>Q4_K kept as sixteen interleaved rows per super-block (<see cref="Q4KTiles"/>, AVX-512): a row is converted
/// from and to the GGUF layout on the way in and out (loading, dequantising a row); products compute a tile's
/// sixteen rows and keep those asked for. Rows past the last whole sixteen are padding.</summary>
internal sealed unsafe class Q4KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q4_K, rows, cols, data, owner)
{
    private const int TileRows = Q4KTiles.Rows;
    private readonly byte* _tiles = data;
    private int SuperBlocks => Cols / 256;
    public override WeightFormat Format => WeightFormat.Q4_K;
    public static long BytesFor(int rows, int cols) => (long)(rows + TileRows - 1) / TileRows * (cols / 256) * Q4KTiles.Bytes;
    public override long Bytes => BytesFor(Rows, Cols);

    /// <summary>A matrix in aligned native memory; the padding rows of the last group are zero.</summary>
    public static Q4KTiledMatrix Create(int rows, int cols)
    {
        var buffer = new NativeBuffer(BytesFor(rows, cols));
        long group = (long)(cols / 256) * Q4KTiles.Bytes;
        if (rows % TileRows != 0) new Span<byte>(buffer.Pointer + (long)(rows / TileRows) * group, checked((int)group)).Clear();
        return new Q4KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    /// <summary>Not kept here: rows are interleaved (<see cref="DequantizeRow"/> gives a row's values).</summary>
    public override ReadOnlySpan<byte> RawRow(int r) =>
        throw new NotSupportedException("Q4_K rows are kept interleaved in tiles; there are no stored bytes of one row to return");

    private byte* Group(int r) => _tiles + (long)(r / TileRows) * SuperBlocks * Q4KTiles.Bytes;

    private Span<BlockQ4K> RowScratch() => MemoryMarshal.Cast<byte, BlockQ4K>(Scratch.StoredRow(checked((int)RowBytes)));

    public override void DequantizeRow(int r, Span<float> dst)
    {
        Span<BlockQ4K> row = RowScratch();
        Q4KTiles.GetRow(Group(r), r % TileRows, row);
        Q4K.DequantizeRow(row, dst);
    }

    public override void SetRow(int r, ReadOnlySpan<float> values)
    {
        Span<BlockQ4K> row = RowScratch();
        Q4K.QuantizeRow(values, row);
        Q4KTiles.SetRow(row, Group(r), r % TileRows);
    }

    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        CheckRowRange(r0, count);
        var stored = new byte[checked((int)(RowBytes * count))];
        fill(stored);
        const int rowsPerTask = 64; // rows of one group touch disjoint bytes, so tasks may split groups
        Parallel.For(0, (count + rowsPerTask - 1) / rowsPerTask, task =>
        {
            ReadOnlySpan<BlockQ4K> blocks = MemoryMarshal.Cast<byte, BlockQ4K>(stored);
            for (int i = task * rowsPerTask; i < Math.Min(count, (task + 1) * rowsPerTask); i++)
                Q4KTiles.SetRow(blocks.Slice(i * SuperBlocks, SuperBlocks), Group(r0 + i), (r0 + i) % TileRows);
        });
    }

    private protected override int RowUnit(int n) => TileRows;

    /// <summary>Tokens in chunks of about 192 KB of codes (kept in L2) against every tile group of the rows in turn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        int chunk = Math.Max(4, (192 << 10) / Cols / 4 * 4);
        for (int t0 = 0; t0 < n; t0 += chunk)
        {
            int tn = Math.Min(chunk, n - t0);
            for (int g = r0 / TileRows * TileRows; g < r1; g += TileRows)
            {
                int lo = Math.Max(r0, g) - g, hi = Math.Min(r1, g + TileRows) - g;
                Q4KTiles.Multiply(Group(g), SuperBlocks, act!, t0, tn, y + (long)t0 * rowCount + (g + lo - rowStart), rowCount, lo, hi);
            }
        }
    }
}

internal sealed unsafe class Q6KMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q6_K, rows, cols, data, owner)
{
    public override WeightFormat Format => WeightFormat.Q6_K;
    private ReadOnlySpan<BlockQ6K> Row(int r) => new(RowPointer(r), Cols / 256);
    public override void DequantizeRow(int r, Span<float> dst) => Q6K.DequantizeRow(Row(r), dst);
    public override void SetRow(int r, ReadOnlySpan<float> values) => Q6K.QuantizeRow(values, new Span<BlockQ6K>(RowPointer(r), Cols / 256));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n)
    {
        QuantizedActivations a = base.Prepare(x, n)!;
        if (Avx2.IsSupported) a.PreparePairs32(n);
        return a;
    }

    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int superBlocks = Cols / 256;
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<BlockQ6K> row = Row(o);
            for (int t = 0; t < n; t++)
                y[(long)t * rowCount + o - rowStart] = Avx2.IsSupported
                    ? Q6K.V256(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks), a.Pairs32.AsSpan(t * Cols / 2, Cols / 2))
                    : Q6K.Scalar(row, a.Q.AsSpan(t * Cols, Cols), a.D.AsSpan(t * superBlocks, superBlocks));
        }
    }
}

/// <summary>Formats without a fused kernel: each row is dequantised into per-thread scratch once and dotted with
/// every token (the row is read once per product, as for the other formats).</summary>
internal abstract unsafe class RowDequantMatrix(int rows, int cols, long rowBytes, byte* data, IDisposable? owner)
    : Matrix(rows, cols, rowBytes, data, owner)
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        Span<float> row = Scratch.Row(Cols);
        for (int o = r0; o < r1; o++)
        {
            DequantizeRow(o, row);
            for (int t = 0; t < n; t++) y[(long)t * rowCount + o - rowStart] = Dot.Compute(row, new ReadOnlySpan<float>(x + (long)t * Cols, Cols));
        }
    }
}

internal sealed unsafe class F16Matrix(int rows, int cols, byte* data, IDisposable? owner) : RowDequantMatrix(rows, cols, RowBytesOf(WeightFormat.F16, cols), data, owner)
{
    public override WeightFormat Format => WeightFormat.F16;

    public override void DequantizeRow(int r, Span<float> dst) =>
        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(RowPointer(r), Cols), dst);

    public override void SetRow(int r, ReadOnlySpan<float> values) =>
        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, new Span<Half>(RowPointer(r), Cols));
}

/// <summary>The GGUF block formats read from files without a fused kernel of their own (
/// Q4_1, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS): rows go through the scalar dequantiser that specifies each format.</summary>
internal sealed unsafe class GgmlRowMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : RowDequantMatrix(rows, cols, RowBytesOf(format, cols), data, owner)
{
    public override WeightFormat Format => format;
    public override void DequantizeRow(int r, Span<float> dst) => GgmlBlocks.Dequantize(format.ToGgml(), RawRow(r), dst);
    public override void SetRow(int r, ReadOnlySpan<float> values) =>
        GgmlBlocks.Quantize(format.ToGgml(), values, new Span<byte>(RowPointer(r), checked((int)RowBytes)));
}

internal sealed unsafe class Fp8Matrix : RowDequantMatrix
{
    private readonly float[] _scales; // [ceil(rows / br), ceil(cols / bc)]
    private readonly int _br, _bc, _scaleCols;

    public Fp8Matrix(int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner)
        : base(rows, cols, RowBytesOf(WeightFormat.FP8, cols), codes, owner)
    {
        (_br, _bc) = block;
        _scaleCols = (cols + _bc - 1) / _bc;
        if (scales.Length != (rows + _br - 1) / _br * _scaleCols)
            throw new ArgumentException($"{scales.Length} block scales; a [{rows}, {cols}] FP8 matrix with {_br}x{_bc} blocks needs {(rows + _br - 1) / _br * _scaleCols}", nameof(scales));
        _scales = scales;
    }

    public override WeightFormat Format => WeightFormat.FP8;

    public override void DequantizeRow(int r, Span<float> dst)
    {
        var codes = new ReadOnlySpan<byte>(RowPointer(r), Cols);
        ReadOnlySpan<float> scaleRow = _scales.AsSpan(r / _br * _scaleCols, _scaleCols);
        for (int c0 = 0, s = 0; c0 < Cols; c0 += _bc, s++)
        {
            int end = Math.Min(Cols, c0 + _bc);
            float scale = scaleRow[s];
            for (int c = c0; c < end; c++) dst[c] = NumberFormats.F8E4M3ToFloat(codes[c]) * scale;
        }
    }

    public override void SetRow(int r, ReadOnlySpan<float> values) =>
        throw new NotSupportedException("FP8 matrices hold checkpoint codes; convert to another format instead");
}

/// <summary>A panel kernel as <see cref="Matrix"/>'s panel loop drives it (see <see cref="BlockGemm{T}"/>).</summary>
internal interface IPanelKernel
{
    static abstract int PanelShorts(int cols);
    static abstract int ScaleFloats(int cols);
    static abstract void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales);
    static abstract unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride);
}

internal readonly struct BlockPanels<T> : IPanelKernel where T : struct, IBlockCodes
{
    public static int PanelShorts(int cols) => cols / 32 * 512;
    public static int ScaleFloats(int cols) => cols / 32 * 16;
    public static void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales) =>
        BlockGemm<T>.Pack(ref w, rowBytes, rows, cols / 32, panel, scales);
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride) =>
        BlockGemm<T>.Multiply(panel, scales, cols / 32, rows, a.Q16.AsSpan(t0 * cols), a.D.AsSpan(t0 * (cols / 32)), n, partials, y, yStride);
}

internal readonly struct Q4KPanels : IPanelKernel
{
    public static int PanelShorts(int cols) => cols / 256 * Q4KGemm.ShortsPerSuperBlock;
    public static int ScaleFloats(int cols) => cols / 256 * 32;
    public static void Pack(ref byte w, long rowBytes, int rows, int cols, Span<short> panel, Span<float> scales) =>
        Q4KGemm.Pack(ref w, rowBytes, rows, cols / 256, panel, scales);
    public static unsafe void Multiply(ReadOnlySpan<short> panel, ReadOnlySpan<float> scales, int cols, int rows,
        QuantizedActivations a, int t0, int n, Span<float> partials, float* y, long yStride) =>
        Q4KGemm.Multiply(panel, scales, cols / 256, rows, a.Q16.AsSpan(t0 * cols), a.D.AsSpan(t0 * (cols / 256)),
            a.BlockSum.AsSpan(t0 * (cols / 32)), n, partials, y, yStride);
}
