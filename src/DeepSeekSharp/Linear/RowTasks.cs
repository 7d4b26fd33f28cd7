namespace DeepSeekSharp.Linear;

/// <summary>Independent rows converted in parallel (loading, quantising, re-tiling): tasks of 64 rows, each with
/// its own scratch, so no two tasks write the same bytes.</summary>
internal static class RowTasks
{
    public const int RowsPerTask = 64;

    /// <summary>Runs <paramref name="body"/>(r0, r1) over [0, rows) in tasks of <see cref="RowsPerTask"/> rows. Tasks
    /// start at multiples of <see cref="RowsPerTask"/>, a multiple of sixteen, so no tile group of sixteen rows is split
    /// between two of them (Q5_0 tiles keep rows r and r + 8 in the same bytes).</summary>
    public static void Run(long rows, Action<int, int> body) =>
        Parallel.For(0, (int)((rows + RowsPerTask - 1) / RowsPerTask), task =>
        {
            int r0 = task * RowsPerTask;
            body(r0, (int)Math.Min(rows, r0 + RowsPerTask));
        });

    /// <summary>Fills <paramref name="m"/> from rows stored in another layout, in parallel: each task reads its rows'
    /// stored bytes (<paramref name="read"/>(first row, bytes)) and converts them one at a time to float32
    /// (<paramref name="convert"/>(stored row, row index, values)) before the matrix quantises them.</summary>
    public static void Convert(Matrix m, long storedRowBytes, Action<int, Span<byte>> read, StoredRowConverter convert) =>
        Run(m.Rows, (r0, r1) =>
        {
            var raw = new byte[(r1 - r0) * storedRowBytes];
            read(r0, raw);
            var row = new float[m.Cols];
            for (int r = r0; r < r1; r++)
            {
                convert(raw.AsSpan((int)((r - r0) * storedRowBytes), (int)storedRowBytes), r, row);
                m.SetRow(r, row);
            }
        });
}

/// <summary>Converts one stored row (its index given) to float32.</summary>
internal delegate void StoredRowConverter(ReadOnlySpan<byte> stored, int row, Span<float> values);
