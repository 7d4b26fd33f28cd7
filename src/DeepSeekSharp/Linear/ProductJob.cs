using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Linear;

/// <summary>One product split over the worker pool by chunks of rows. Each thread keeps its own job, so products
/// nested in other pool jobs (experts, attention heads) need no allocation.</summary>
internal sealed unsafe class ProductJob : PoolJob
{
    [ThreadStatic] private static ProductJob? _mine;
    public static ProductJob ForThisThread => _mine ??= new ProductJob();

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

    public void Rows(int r0, int r1) => _m!.DotRowsOnThisThread(_act, _x, _y, _n, _rowStart + r0, _rowStart + r1, _rowStart, _rowCount);

    public override void Execute(int chunk) => Rows(chunk * ChunkRows, Math.Min((chunk + 1) * ChunkRows, _rowCount));
}

/// <summary>Per-thread scratch of the products, grown and then reused (no allocation in steady state).</summary>
internal static class LinearScratch
{
    [ThreadStatic] private static float[]? _row;
    [ThreadStatic] private static QuantizedActivations? _act;
    [ThreadStatic] private static byte[]? _stored;

    /// <summary>A dequantised row, or scaled activations: starting on a 64-byte boundary, so the 512-bit loads of the
    /// kernels that read it never split across cache lines.</summary>
    public static Span<float> Row(int n) => AlignedScratch.Grow(ref _row, n);

    /// <summary>This thread's quantised activations.</summary>
    public static QuantizedActivations Activations => _act ??= new QuantizedActivations();

    /// <summary>A row in its file layout (for formats kept otherwise in memory).</summary>
    public static Span<byte> StoredRow(int bytes)
    {
        if (_stored is null || _stored.Length < bytes) _stored = new byte[bytes];
        return _stored.AsSpan(0, bytes);
    }
}
