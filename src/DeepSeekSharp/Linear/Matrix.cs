using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>A linear layer's weight [Rows, Cols] ([out, in], y = W x) in one storage format, rows contiguous in
/// memory that never moves: aligned native memory, or a memory-mapped file used in place. Every format gives the
/// same operations: a batched product (<see cref="Forward"/>) and row dequantisation (embedding lookup). The
/// product is split over threads by rows here; each format's family (one file each) computes a chunk of rows.
/// Each output element is computed by one thread with a fixed summation order, so results do not depend on the
/// thread count, the batch a row sits in, or where the activations lie in memory.</summary>
public abstract unsafe class Matrix : IDisposable
{
    private readonly byte* _data;
    private readonly IDisposable? _owner;

    private protected Matrix(WeightFormat format, int rows, int cols, long rowBytes, byte* data, IDisposable? owner)
    {
        Traits = format.Traits();
        Rows = rows;
        Cols = cols;
        RowBytes = rowBytes;
        _data = data;
        _owner = owner;
    }

    private protected Matrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
        : this(format, rows, cols, format.Traits().RowBytes(cols), data, owner) { }

    public FormatTraits Traits { get; }
    public WeightFormat Format => Traits.Format;
    public int Rows { get; }
    public int Cols { get; }
    /// <summary>Bytes of one row in the format's file layout.</summary>
    public long RowBytes { get; }
    /// <summary>Bytes the matrix occupies in memory.</summary>
    public virtual long Bytes => RowBytes * Rows;

    private protected byte* RowPointer(int r) => _data + r * RowBytes;

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

    /// <summary>Writes row r as float32 (the format's scalar dequantiser).</summary>
    public virtual void DequantizeRow(int r, Span<float> dst) => Traits.Dequantize(RawRow(r), dst);

    /// <summary>Stores a float32 row into row r, quantising as the format requires (used while loading).</summary>
    public virtual void SetRow(int r, ReadOnlySpan<float> values) =>
        Traits.Quantize(values, new Span<byte>(RowPointer(r), checked((int)RowBytes)));

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
        QuantizedActivations? act = Prepare(x, n, LinearScratch.Activations);
        fixed (float* px = x, py = y)
        {
            ProductJob job = ProductJob.ForThisThread;
            job.Set(this, act, px, py, n, rowStart, rowCount);
            long work = (long)n * rowCount * Cols;
            int threads = WorkerPool.Shared.Threads;
            if (work < 1 << 15 || threads == 1) job.Rows(0, rowCount);
            else
            {
                int unit = RowUnit(n);
                int chunkRows = ChunkRows(rowCount, RowBytes, n, threads);
                chunkRows = (chunkRows + unit - 1) / unit * unit;
                job.ChunkRows = chunkRows;
                WorkerPool.Shared.Run(job, (rowCount + chunkRows - 1) / chunkRows);
            }
            job.Clear();
        }
    }

    /// <summary>Tokens × weight bytes a chunk of rows should hold at least: each chunk starts a new stream through
    /// memory, and the hardware prefetchers need a while to pick one up. One token over chunks of ~90 KB read
    /// 37–40 GB/s on two threads where chunks of 1 MB read 58–68 (`bench stream Q8_0`, Zen 5, read probe 53–72).</summary>
    internal const long ChunkWork = 1 << 20;

    /// <summary>Rows per chunk when <paramref name="threads"/> threads share <paramref name="rowCount"/> rows of
    /// <paramref name="rowBytes"/> for <paramref name="n"/> tokens: 48 chunks a thread, so a thread slowed by the host is made up for, unless that
    /// makes chunks smaller than <see cref="ChunkWork"/>; then fewer and larger, the same number for every thread,
    /// at least one each.</summary>
    internal static int ChunkRows(int rowCount, long rowBytes, int n, int threads)
    {
        int rows = Math.Max(4, (rowCount + threads * 48 - 1) / (threads * 48));
        long work = Math.Max(rowBytes * n, 1), minRows = (ChunkWork + work - 1) / work;
        if (rows >= minRows) return rows;
        int perThread = (int)Math.Clamp(rowCount / (minRows * threads), 1, 48);
        return (rowCount + threads * perThread - 1) / (threads * perThread);
    }

    /// <summary>Prepares the activations for <see cref="DotRows"/>, as the format's <see cref="FormatTraits.Activations"/>
    /// says: integer formats quantise them to 8 bits per block of 32 or 256 (into <paramref name="target"/>, the
    /// calling thread's scratch for <see cref="Forward"/>); float formats use them as they are (null).</summary>
    private protected virtual QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        if (Traits.Activations == ActivationKind.Float) return null;
        if (Traits.Activations == ActivationKind.Q8PerBlock32) target.Quantize(x, n, Cols);
        else target.QuantizeK(x, n, Cols);
        return target;
    }

    /// <summary>Prepares <paramref name="x"/> once for several <c>ForwardRows</c> calls over parts of the rows
    /// (which any thread may run): what <see cref="Forward"/> does first, into <paramref name="target"/>.</summary>
    /// <returns>what to pass to <c>ForwardRows</c>: <paramref name="target"/>, or null for float formats</returns>
    internal QuantizedActivations? PrepareFor(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        if (x.Length < (long)n * Cols) ThrowHelper.TooShort(nameof(x), (long)n * Cols, x.Length);
        return Prepare(x, n, target);
    }

    /// <summary>One token's y[o − rowStart] for o in [rowStart, rowStart + rowCount) on the calling thread, from
    /// activations <see cref="PrepareFor"/> made of <paramref name="x"/> for this matrix's format: the same bits as
    /// those rows of <see cref="Forward"/>.</summary>
    internal void ForwardRows(QuantizedActivations? prepared, ReadOnlySpan<float> x, Span<float> y, int rowStart, int rowCount) =>
        ForwardRows(prepared, x, 1, y, rowCount, rowStart, rowCount);

    /// <summary><paramref name="n"/> tokens' y[t · yStride + o − rowStart] for o in [rowStart, rowStart + rowCount) on the
    /// calling thread, from activations <see cref="PrepareFor"/> made of the <paramref name="n"/> tokens of
    /// <paramref name="x"/>: the same bits as those rows of <see cref="Forward"/>.</summary>
    internal void ForwardRows(QuantizedActivations? prepared, ReadOnlySpan<float> x, int n, Span<float> y, int yStride, int rowStart, int rowCount)
    {
        CheckRowRange(rowStart, rowCount);
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "at least one token");
        if (yStride < rowCount) throw new ArgumentOutOfRangeException(nameof(yStride), yStride, $"less than the {rowCount} rows of a token");
        if (x.Length < (long)n * Cols) ThrowHelper.TooShort(nameof(x), (long)n * Cols, x.Length);
        if (y.Length < (long)(n - 1) * yStride + rowCount) ThrowHelper.TooShort(nameof(y), (long)(n - 1) * yStride + rowCount, y.Length);
        if (prepared is null != (Traits.Activations == ActivationKind.Float) || prepared is not null &&
            (prepared.Cols != Cols || prepared.BlockSize != (Traits.Activations == ActivationKind.Q8PerBlock32 ? QuantizedActivations.Block : 256)))
            throw new ArgumentException("activations not prepared for this matrix's format and width", nameof(prepared));
        if (rowCount == 0) return;
        fixed (float* px = x, py = y) DotRows(prepared, px, py, n, rowStart, rowStart + rowCount, rowStart, yStride);
    }

    /// <summary>Rows a kernel handles together for <paramref name="n"/> tokens (chunks handed to threads are multiples).</summary>
    private protected virtual int RowUnit(int n) => UseGemm(n) ? Linear.PanelProduct.PanelRows : 1;

    /// <summary>Whether <paramref name="n"/> tokens go through this format's panel kernel (see <see cref="Linear.PanelProduct"/>).</summary>
    private protected virtual bool UseGemm(int n) => false;

    /// <summary>y[t, o − rowStart] for o in [r0, r1): the per-format inner kernel (one thread).</summary>
    private protected abstract void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount);

    /// <summary>The panel loop over rows [r0, r1) for <typeparamref name="TK"/> (see <see cref="Linear.PanelProduct"/>).</summary>
    private protected void Panels<TK>(QuantizedActivations a, float* y, int n, int r0, int r1, int rowStart, int rowCount)
        where TK : IPanelKernel =>
        Linear.PanelProduct.Run<TK>(_data, RowBytes, Cols, a, y, n, r0, r1, rowStart, rowCount);

    internal void DotRowsOnThisThread(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount) =>
        DotRows(a, x, y, n, r0, r1, rowStart, rowCount);

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
        _ = ProductJob.ForThisThread;
        LinearScratch.Activations.Reserve(tokens, cols);
        LinearScratch.Row(cols * Math.Min(Math.Max(tokens, 1), WidenedMatrix<Fp8Codes>.TokenGroup)); // a dequantised row, or FP8's scaled activations
    }

    /// <summary>Allocates a matrix of a format in aligned native memory (contents to be set with <see cref="SetRow"/>).
    /// Q2_K–Q6_K, Q8_0, Q5_0 and Q4_0 are kept as sixteen interleaved rows (<see cref="Q4KTiles"/>, <see cref="Q5KTiles"/>, <see cref="Q6KTiles"/>,
    /// <see cref="LowBitKTiles"/>, <see cref="Q8Tiles"/>, <see cref="Q5Tiles"/>, <see cref="Q4Tiles"/>) where the CPU has the kernels for them, and BF16 and F16 rows
    /// wider than 8,192 columns as sixteen rows interleaved by column panels (<see cref="PanelMatrix{TC}"/>).</summary>
    public static Matrix Create(WeightFormat format, int rows, int cols) => Create(format, rows, cols, tiles: true);

    /// <summary><see cref="Create(WeightFormat, int, int)"/>; <paramref name="tiles"/> false keeps every format in its
    /// file layout (as a mapped file is used), for tests of those kernels.</summary>
    internal static Matrix Create(WeightFormat format, int rows, int cols, bool tiles)
    {
        long rowBytes = format.Traits().RowBytes(cols);
        if (tiles && format == WeightFormat.Q4_K && Q4KTiles.IsSupported) return Q4KTiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.Q6_K && Q6KTiles.IsSupported) return Q6KTiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.Q5_K && Q5KTiles.IsSupported) return Q5KTiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.Q3_K && LowBitKTiles.IsSupported) return LowBitKTiledMatrix<Q3KTileLayout>.Create(rows, cols);
        if (tiles && format == WeightFormat.Q2_K && LowBitKTiles.IsSupported) return LowBitKTiledMatrix<Q2KTileLayout>.Create(rows, cols);
        if (tiles && format == WeightFormat.Q8_0 && Q8Tiles.IsSupported) return Q8TiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.Q5_0 && Q5Tiles.IsSupported) return Q5TiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.Q4_0 && Q4Tiles.IsSupported) return Q4TiledMatrix.Create(rows, cols);
        if (tiles && format == WeightFormat.BF16 && InPanels<Bf16Codes>(format, rows, cols) is { } bf16) return bf16;
        if (tiles && format == WeightFormat.F16 && InPanels<F16Codes>(format, rows, cols) is { } f16) return f16;
        var buffer = new NativeBuffer(rowBytes * rows, weights: true);
        return Wrap(format, rows, cols, buffer.Pointer, buffer);
    }

    /// <summary>An empty one-block (scale 1) matrix of two-byte float codes in column panels, where its rows suit them.</summary>
    private static Matrix? InPanels<TC>(WeightFormat format, int rows, int cols) where TC : struct, IWidenedCodes =>
        PanelMatrix<TC>.Suits(rows, cols, UnitScale.Block(rows, cols))
            ? PanelMatrix<TC>.Create(format, rows, cols, UnitScale.For(rows, cols), UnitScale.Block(rows, cols))
            : null;

    /// <summary>A matrix over existing memory (e.g. a mapped file); <paramref name="owner"/> is disposed with it.</summary>
    public static Matrix Wrap(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner) =>
        (format.Traits().Wrap ?? throw new ArgumentOutOfRangeException(nameof(format), format,
            "FP8 matrices are made with CreateFp8 (they need block scales)"))(rows, cols, data, owner);

    /// <summary>An FP8 E4M3 matrix over raw codes with one float scale per <paramref name="block"/> tile
    /// (DeepSeek-V3's weight_scale_inv: W[r, c] = fp8(q[r, c]) · scale[r / br, c / bc]).</summary>
    public static Matrix CreateFp8(int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner) =>
        new WidenedMatrix<Fp8Codes>(WeightFormat.FP8, rows, cols, codes, scales, block, owner);

    /// <summary>A matrix of <paramref name="format"/> from float32 values (tests, small weights).</summary>
    public static Matrix FromValues(int rows, int cols, ReadOnlySpan<float> values, WeightFormat format = WeightFormat.F32) =>
        FromValues(rows, cols, values, format, tiles: true);

    internal static Matrix FromValues(int rows, int cols, ReadOnlySpan<float> values, WeightFormat format, bool tiles)
    {
        Matrix m = Create(format, rows, cols, tiles);
        for (int r = 0; r < rows; r++) m.SetRow(r, values.Slice(r * cols, cols));
        return m;
    }
}
