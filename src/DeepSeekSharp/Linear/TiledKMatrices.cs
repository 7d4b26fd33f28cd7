using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>A k-quant kept as sixteen interleaved rows per super-block (<see cref="Q4KTiles"/>, <see cref="Q6KTiles"/>:
/// AVX-512): a row is converted from and to the GGUF layout on the way in and out (loading, dequantising a row);
/// products compute a tile's sixteen rows and keep those asked for. Rows past the last whole sixteen are padding
/// (zero).</summary>
/// <param name="groupBytes">bytes of a group of sixteen rows</param>
internal abstract unsafe class TiledKMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner, long groupBytes)
    : KBlockMatrix(format, rows, cols, data, owner)
{
    private protected const int TileRows = 16;
    private readonly byte* _tiles = data;

    /// <summary>Bytes of a matrix of <paramref name="rows"/> in groups of sixteen rows of <paramref name="groupBytes"/>.</summary>
    private protected static long BytesFor(int rows, long groupBytes) => (long)(rows + TileRows - 1) / TileRows * groupBytes;

    public override long Bytes => BytesFor(Rows, groupBytes);

    /// <summary>Aligned native memory for a matrix, the padding rows of the last group cleared.</summary>
    private protected static NativeBuffer Allocate(int rows, long groupBytes)
    {
        var buffer = new NativeBuffer(BytesFor(rows, groupBytes), weights: true);
        if (rows % TileRows != 0) new Span<byte>(buffer.Pointer + (long)(rows / TileRows) * groupBytes, checked((int)groupBytes)).Clear();
        return buffer;
    }

    /// <summary>Writes row <paramref name="r"/> (0..15) of a tile group from the row's GGUF bytes.</summary>
    private protected abstract void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r);

    /// <summary>Row <paramref name="r"/> of a tile group as GGUF bytes.</summary>
    private protected abstract void GetStoredRow(byte* group, int r, Span<byte> stored);

    /// <summary>Token <paramref name="token"/> against a tile group's sixteen rows, row r's result in lanes[r].</summary>
    private protected abstract void One(byte* group, QuantizedActivations a, int token, float* lanes);

    /// <summary>Tokens <paramref name="token"/> .. + 3 against a tile group, token t's row r in lanes[16t + r].</summary>
    private protected abstract void Four(byte* group, QuantizedActivations a, int token, float* lanes);

    /// <summary>Not kept here: rows are interleaved (<see cref="DequantizeRow"/> gives a row's values).</summary>
    public override ReadOnlySpan<byte> RawRow(int r) =>
        throw new NotSupportedException($"{Format} rows are kept interleaved in tiles; there are no stored bytes of one row to return");

    private byte* Group(int r) => _tiles + (long)(r / TileRows) * groupBytes;

    public override void DequantizeRow(int r, Span<float> dst)
    {
        Span<byte> row = LinearScratch.StoredRow(checked((int)RowBytes));
        GetStoredRow(Group(r), r % TileRows, row);
        Traits.Dequantize(row, dst);
    }

    public override void SetRow(int r, ReadOnlySpan<float> values)
    {
        Span<byte> row = LinearScratch.StoredRow(checked((int)RowBytes));
        Traits.Quantize(values, row);
        SetStoredRow(row, Group(r), r % TileRows);
    }

    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        CheckRowRange(r0, count);
        var stored = new byte[checked((int)(RowBytes * count))];
        fill(stored);
        int rowBytes = checked((int)RowBytes);
        // Rows of one group touch disjoint bytes, so tasks may split groups.
        RowTasks.Run(count, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++) SetStoredRow(stored.AsSpan(i * rowBytes, rowBytes), Group(r0 + i), (r0 + i) % TileRows);
        });
    }

    private protected override int RowUnit(int n) => TileRows;

    /// <summary>Tokens in chunks of about 192 KB of codes (kept in L2) against every tile group of the rows in turn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        float* lanes = stackalloc float[4 * TileRows];
        int chunk = Math.Max(4, (192 << 10) / Cols / 4 * 4);
        for (int t0 = 0; t0 < n; t0 += chunk)
        {
            int t1 = Math.Min(t0 + chunk, n);
            for (int g = r0 / TileRows * TileRows; g < r1; g += TileRows)
            {
                // Four tokens at a time, then one; the rows asked for kept.
                int lo = Math.Max(r0, g) - g, hi = Math.Min(r1, g + TileRows) - g, t = t0;
                float* yg = y + (g + lo - rowStart);
                for (; t + 4 <= t1; t += 4)
                {
                    Four(Group(g), a, t, lanes);
                    for (int k = 0; k < 4; k++) Store(lanes + k * TileRows, yg + (long)(t + k) * rowCount, lo, hi);
                }
                for (; t < t1; t++)
                {
                    One(Group(g), a, t, lanes);
                    Store(lanes, yg + (long)t * rowCount, lo, hi);
                }
            }
        }
    }

    private static void Store(float* lanes, float* y, int lo, int hi)
    {
        for (int r = lo; r < hi; r++) y[r - lo] = lanes[r];
    }
}

/// <summary>Q4_K in <see cref="Q4KTiles"/>.</summary>
internal sealed unsafe class Q4KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(WeightFormat.Q4_K, rows, cols, data, owner, GroupBytes(cols))
{
    private static long GroupBytes(int cols) => (long)(cols / 256) * Q4KTiles.Bytes;

    public static long BytesFor(int rows, int cols) => BytesFor(rows, GroupBytes(cols));

    public static Q4KTiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, GroupBytes(cols));
        return new Q4KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) =>
        Q4KTiles.SetRow(MemoryMarshal.Cast<byte, BlockQ4K>(stored), group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) =>
        Q4KTiles.GetRow(group, r, MemoryMarshal.Cast<byte, BlockQ4K>(stored));

    private protected override void One(byte* group, QuantizedActivations a, int token, float* lanes) => Q4KTiles.One(group, SuperBlocks, a, token, lanes);

    private protected override void Four(byte* group, QuantizedActivations a, int token, float* lanes) => Q4KTiles.Four(group, SuperBlocks, a, token, lanes);
}

/// <summary>Q6_K in <see cref="Q6KTiles"/> (llama.cpp's choice for the output matrix of a Q4_K_M file).</summary>
internal sealed unsafe class Q6KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(WeightFormat.Q6_K, rows, cols, data, owner, Q6KTiles.GroupBytes(cols / 256))
{
    public static long BytesFor(int rows, int cols) => BytesFor(rows, Q6KTiles.GroupBytes(cols / 256));

    public static Q6KTiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, Q6KTiles.GroupBytes(cols / 256));
        return new Q6KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        a.PrepareSums16(n);
        return a;
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) =>
        Q6KTiles.SetRow(MemoryMarshal.Cast<byte, BlockQ6K>(stored), group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) =>
        Q6KTiles.GetRow(group, r, MemoryMarshal.Cast<byte, BlockQ6K>(stored));

    private protected override void One(byte* group, QuantizedActivations a, int token, float* lanes) => Q6KTiles.One(group, SuperBlocks, a, token, lanes);

    private protected override void Four(byte* group, QuantizedActivations a, int token, float* lanes) => Q6KTiles.Four(group, SuperBlocks, a, token, lanes);
}
