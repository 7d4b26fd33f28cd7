using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>Q4_K kept as sixteen interleaved rows per super-block (<see cref="Q4KTiles"/>, AVX-512): a row is converted
/// from and to the GGUF layout on the way in and out (loading, dequantising a row); products compute a tile's
/// sixteen rows and keep those asked for. Rows past the last whole sixteen are padding.</summary>
internal sealed unsafe class Q4KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : KBlockMatrix(WeightFormat.Q4_K, rows, cols, data, owner)
{
    private const int TileRows = Q4KTiles.Rows;
    private readonly byte* _tiles = data;
    public static long BytesFor(int rows, int cols) => (long)(rows + TileRows - 1) / TileRows * (cols / 256) * Q4KTiles.Bytes;
    public override long Bytes => BytesFor(Rows, Cols);

    /// <summary>A matrix in aligned native memory; the padding rows of the last group are zero.</summary>
    public static Q4KTiledMatrix Create(int rows, int cols)
    {
        var buffer = new NativeBuffer(BytesFor(rows, cols), weights: true);
        long group = (long)(cols / 256) * Q4KTiles.Bytes;
        if (rows % TileRows != 0) new Span<byte>(buffer.Pointer + (long)(rows / TileRows) * group, checked((int)group)).Clear();
        return new Q4KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    /// <summary>Not kept here: rows are interleaved (<see cref="DequantizeRow"/> gives a row's values).</summary>
    public override ReadOnlySpan<byte> RawRow(int r) =>
        throw new NotSupportedException("Q4_K rows are kept interleaved in tiles; there are no stored bytes of one row to return");

    private byte* Group(int r) => _tiles + (long)(r / TileRows) * SuperBlocks * Q4KTiles.Bytes;

    private Span<BlockQ4K> RowScratch() => MemoryMarshal.Cast<byte, BlockQ4K>(LinearScratch.StoredRow(checked((int)RowBytes)));

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
        // Rows of one group touch disjoint bytes, so tasks may split groups.
        RowTasks.Run(count, (i0, i1) =>
        {
            ReadOnlySpan<BlockQ4K> blocks = MemoryMarshal.Cast<byte, BlockQ4K>(stored);
            for (int i = i0; i < i1; i++)
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
