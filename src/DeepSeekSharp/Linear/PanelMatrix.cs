using System.Buffers;
using System.Runtime.CompilerServices;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>Float codes (<see cref="IWidenedCodes"/>: FP8, BF16, F16) in rows too wide for their activations to stay in
/// L1 beside them (V3's o_proj: 16,384 columns, 64 KB of float32 activations; its head: 7,168), kept as groups of
/// sixteen rows interleaved by panels of <see cref="Panel"/> columns: group g holds, panel after panel, the sixteen
/// rows' codes of that panel, row k at k · (panel width). One token reads a group as one stream and each panel of
/// activations from L1 for all sixteen rows (<see cref="WidenedDot{TC}.Panels"/>: each row's accumulators carried
/// across the panels in <see cref="Kernels.Dot"/>'s order, so the same bits as the file layout). `bench fp8-panels` on
/// Zen 5, 16,384 columns: 19 → 32 GB/s on two threads, 10 → 18 on one. More tokens, and a row with a special code,
/// take the file layout's kernels on the row gathered (<see cref="RawRow"/>).
/// <para>FP8 rows no wider than <see cref="MinCols"/> are kept in quads instead: groups of four rows interleaved by
/// runs of 64 codes (the same arrangement with four rows and 64-column panels), which
/// <see cref="WidenedDot{TC}.Quads"/> reads as one stream, each activation load serving four rows. A row at a time the
/// one-token FP8 product is bound by its arithmetic (three integer operations widen sixteen codes), and rows of the file
/// layout read several at once are streams the hardware prefetcher does not follow. Zen 5, the same bits: `bench
/// stream --in-cache FP8` (one thread, in L2) 39.5 / 40.8 → 43.1 / 44.1 GB/s; `bench stream --rows 1408 --cols 2048
/// --count 200 FP8` from memory, paired in the same runs: faster in three of five runs on two threads (41.9–47.8 →
/// 44.1–51.1 GB/s; 47.3 → 46.3 and 34.0 → 32.9 the others) and in two of four on one — within the host's drift.</para>
/// <para>Rows wider than 4,096 columns in whole runs of 64 (V3's 7,168 and 18,432 columns; FP8, BF16 and F16) are kept
/// as quad panels: groups of sixteen
/// rows, four quads each, by panels of <see cref="QuadPanel"/> columns (a panel's 2 KB of activations stay in L1 for
/// the group's four quads, which a whole row's 28–72 KB do not beside the stream), each row's accumulators carried
/// across the panels. `bench stream --cols N FP8`, Zen 5, three rounds alternating with the sixteen-row panels: at
/// 7,168 columns 30.3 / 32.3 / 28.6 → 44.4 / 37.5 / 41.8 GB/s on two threads and 18.9 / 15.5 / 15.2 → 23.6 / 20.0 /
/// 22.4 on one; at 18,432 37.0 / 30.7 / 36.7 → 38.0 / 40.8 / 42.6 and 21.4 / 20.5 / 20.3 → 18.8 / 23.6 / 23.9. BF16
/// at 7,168 against the file layout: 34.9 / 33.6 / 33.3 → 44.1 / 41.1 / 45.0 on two threads; F16 at 7,168 34.1 / 31.1 →
/// 42.3 / 44.2 and 14.3 / 15.1 → 20.0 / 26.2 on one; BF16 at 16,384 against sixteen-row panels 43.9 / 37.3 → 45.2 /
/// 45.2 and 21.3 / 18.8 → 26.7 / 22.7.</para>
/// <para>Where the CPU has AVX2 but not the 512-bit kernels, FP8 rows in whole runs of 32 are kept in runs instead:
/// row by row as in the file, each run of 32 codes transposed so that one load widens into four vectors with in-lane
/// shifts (<see cref="Fp8Runs"/>), any number of tokens, any block rows. `bench stream FP8` on Zen 3 (AVX2 only),
/// file layout and runs pass by pass in the same runs: 23.4 → 30.9 GB/s on two threads, 12.2 → 17.1 on one; in L2
/// (`--in-cache`) 16.5 → 20.9.</para></summary>
internal sealed unsafe class PanelMatrix<TC> : WidenedMatrix<TC> where TC : struct, IWidenedCodes
{
    /// <summary>Columns per panel.</summary>
    public const int Panel = 2048;

    /// <summary>Columns per panel of quad panels (rows wider than <see cref="QuadCols"/> in whole runs of 64).</summary>
    public const int QuadPanel = 512;

    /// <summary>The widest rows kept in quads of whole rows (FP8); wider rows in whole runs of 64 are quad panels.</summary>
    private const int QuadCols = 2 * Panel;

    private readonly byte* _groups;
    private readonly int _groupRows, _panel;
    private readonly int _quadsPerGroup, _quadPanel; // quads a group and their panel's columns; 0: sixteen rows by panels
    private readonly bool _runs; // FP8 rows one by one, each run of 32 codes transposed (AVX2 without AVX-512)

    /// <summary>Whether the rows are kept in quads (four rows by runs of 64 codes: one quad a group with whole rows, or
    /// four quads a group by panels of <see cref="QuadPanel"/> columns) rather than sixteen rows by panels.</summary>
    public bool Quads => _quadsPerGroup > 0;

    private PanelMatrix(WeightFormat format, int rows, int cols, byte* groups, float[] scales, (int Rows, int Cols) block, bool runs, NativeBuffer owner)
        : base(format, rows, cols, groups, scales, block, owner)
    {
        _groups = groups;
        _runs = runs;
        _groupRows = runs ? 1 : GroupRowsFor(cols);
        (_quadsPerGroup, _quadPanel) = _runs ? (0, 0) : InQuads(cols) ? (1, cols) : InQuadPanels(cols) ? (_groupRows / WidenedDot<TC>.QuadRows, QuadPanel) : (0, 0);
        _panel = _runs ? cols : Quads ? WidenedDot<TC>.QuadRun : Panel;
    }

    /// <summary>Whether the rows are kept one by one in runs (<see cref="Fp8Runs"/>) rather than interleaved.</summary>
    public bool Runs => _runs;

    /// <summary>Rows of <paramref name="cols"/> columns kept in runs: FP8 in whole runs of 32 where the CPU has AVX2 but
    /// not the 512-bit kernels.</summary>
    private static bool InRuns(int cols) => TC.Bytes == 1 && cols % Fp8Runs.Run == 0 && Fp8Runs.IsSupported && !WidenedDot<TC>.FourAtOnce;

    /// <summary>Rows of <paramref name="cols"/> columns kept in quads, one a group: FP8 (one-byte codes) no wider than
    /// <see cref="QuadCols"/>, in whole runs of 64.</summary>
    private static bool InQuads(int cols) => TC.Bytes == 1 && cols <= QuadCols && cols % WidenedDot<TC>.QuadRun == 0;

    /// <summary>Rows of <paramref name="cols"/> columns kept in quad panels (sixteen rows, four quads by panels of
    /// <see cref="QuadPanel"/>): wider than <see cref="QuadCols"/>, in whole runs of 64, whatever the code's width.</summary>
    private static bool InQuadPanels(int cols) => cols > QuadCols && cols % WidenedDot<TC>.QuadRun == 0;

    private static int GroupRowsFor(int cols) => InQuads(cols) ? WidenedDot<TC>.QuadRows : WidenedDot<TC>.PanelRows;

    /// <summary>Columns a row must exceed to be kept in sixteen-row panels where it is not in whole runs of 64 (those
    /// wider than 4,096 are quad panels): two panels for FP8 (at 7,168 columns, 23 → 27 GB/s on two threads), four
    /// for two-byte codes — `bench stream --cols N` on Zen 5, two threads then one, file layout → panels: BF16 at 7,168
    /// columns 36.4 → 34.6 and 22.3 → 23.0 GB/s (no gain: 28 KB of activations share L1 with the stream well enough);
    /// at 16,384 BF16 36.1 → 35.2 and 20.0 → 23.9, F16 32.1 → 34.4 and 17.8 → 22.6.</summary>
    public static int MinCols => (TC.Bytes == 1 ? 2 : 4) * Panel;

    /// <summary>Whether a [rows, cols] matrix with these blocks is kept here. With the 512-bit widened kernel: in quads
    /// (FP8 rows up to 4,096 columns), in quad panels (any rows wider than 4,096), both in whole runs of 64 columns, or
    /// in sixteen-row panels (rows wider than <see cref="MinCols"/>); block rows whole groups (of sixteen rows, of
    /// four), or one block for all rows. With AVX2 alone: FP8 rows in whole runs of 32, in runs.</summary>
    public static bool Suits(int rows, int cols, (int Rows, int Cols) block) =>
        rows > 0 && (InRuns(cols) || (cols > MinCols || InQuads(cols) || InQuadPanels(cols)) && (block.Rows % GroupRowsFor(cols) == 0 || block.Rows >= rows) && WidenedDot<TC>.FourAtOnce);

    /// <summary>An empty [rows, cols] matrix in panels (rows to be set by <see cref="ReadStoredRows"/> or
    /// <see cref="Matrix.SetRow"/>); <paramref name="runs"/> (for tests) keeps FP8 rows in runs whatever this CPU's widest
    /// kernel, by default where <see cref="Suits"/> chooses them.</summary>
    public static PanelMatrix<TC> Create(WeightFormat format, int rows, int cols, float[] scales, (int Rows, int Cols) block, bool? runs = null)
    {
        bool inRuns = runs ?? InRuns(cols);
        if (inRuns && (TC.Bytes != 1 || cols % Fp8Runs.Run != 0 || !Fp8Runs.IsSupported))
            throw new ArgumentException($"runs hold one-byte codes in whole runs of {Fp8Runs.Run} columns on a CPU with AVX2; {cols} columns of {format} here", nameof(runs));
        int groupRows = inRuns ? 1 : GroupRowsFor(cols);
        long groups = (rows + groupRows - 1) / groupRows, rowBytes = (long)cols * TC.Bytes;
        var buffer = new NativeBuffer(groups * groupRows * rowBytes, weights: true);
        try
        {
            // Padding rows of the last group: zero codes (numbers; their results are never stored).
            new Span<byte>(buffer.Pointer + rows * rowBytes, checked((int)((groups * groupRows - rows) * rowBytes))).Clear();
            return new PanelMatrix<TC>(format, rows, cols, buffer.Pointer, scales, block, inRuns, buffer);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>[rows, cols] codes read in parallel tasks of rows (<paramref name="read"/>(first row, its rows' bytes in
    /// the file layout)) straight into panels: no copy of the whole matrix in the file layout on the way.</summary>
    public static PanelMatrix<TC> Read(WeightFormat format, int rows, int cols, float[] scales, (int Rows, int Cols) block, Action<int, Span<byte>> read, bool? runs = null)
    {
        PanelMatrix<TC> m = Create(format, rows, cols, scales, block, runs);
        try
        {
            RowTasks.Run(rows, (r0, r1) => m.ReadStoredRows(r0, r1 - r0, span => read(r0, span)));
            return m;
        }
        catch
        {
            m.Dispose();
            throw;
        }
    }

    /// <summary>A copy of [rows, cols] codes in the file layout (<paramref name="codes"/>) in panels.</summary>
    public static PanelMatrix<TC> From(WeightFormat format, int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, bool? runs = null)
    {
        long rowBytes = (long)cols * TC.Bytes;
        return Read(format, rows, cols, scales, block, (r0, dst) => new ReadOnlySpan<byte>(codes + r0 * rowBytes, dst.Length).CopyTo(dst), runs);
    }

    /// <summary>Rows [r0, r0 + count) from their bytes in the file layout, through a pooled buffer into their places in
    /// the groups (a row's places are its own, so tasks on any rows may run at once).</summary>
    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        CheckRowRange(r0, count);
        int rowBytes = checked((int)RowBytes);
        byte[] stored = ArrayPool<byte>.Shared.Rent(checked(count * rowBytes));
        try
        {
            fill(stored.AsSpan(0, count * rowBytes));
            for (int r = r0; r < r0 + count; r++) Scatter(r, stored.AsSpan((r - r0) * rowBytes, rowBytes));
        }
        finally { ArrayPool<byte>.Shared.Return(stored); }
        Forget(r0, count);
    }

    private protected override void SetCodes(int r, ReadOnlySpan<float> values)
    {
        Span<byte> row = LinearScratch.StoredRow(checked((int)RowBytes));
        Traits.Quantize(values, row);
        Scatter(r, row);
    }

    /// <summary>Row <paramref name="r"/>'s codes into their places in the groups.</summary>
    private void Scatter(int r, ReadOnlySpan<byte> row)
    {
        if (_runs)
        {
            Fp8Runs.Arrange(row, Piece(r, 0));
            return;
        }
        for (int p0 = 0; p0 < Cols; p0 += _panel) row.Slice(p0 * TC.Bytes, Piece(r, p0).Length).CopyTo(Piece(r, p0));
    }

    /// <summary>The group holding row <paramref name="r"/>.</summary>
    private byte* GroupOf(int r) => _groups + (long)(r / _groupRows) * _groupRows * RowBytes;

    /// <summary>Row <paramref name="r"/>'s codes of the panel (of quads: the run) starting at column <paramref name="p0"/>.</summary>
    private Span<byte> Piece(int r, int p0)
    {
        int w = Math.Min(_panel, Cols - p0) * TC.Bytes, k = r % _groupRows;
        if (!Quads) return new Span<byte>(GroupOf(r) + (long)_groupRows * p0 * TC.Bytes + (long)k * w, w);
        // The group's panels before p0's are whole; in p0's panel, quad k / 4 after the earlier quads, run after run.
        int first = p0 / _quadPanel * _quadPanel, width = Math.Min(_quadPanel, Cols - first);
        long at = (long)_groupRows * first + (long)(k / WidenedDot<TC>.QuadRows) * WidenedDot<TC>.QuadRows * width
            + (long)(p0 - first) * WidenedDot<TC>.QuadRows + (long)(k % WidenedDot<TC>.QuadRows) * WidenedDot<TC>.QuadRun;
        return new Span<byte>(GroupOf(r) + at * TC.Bytes, w);
    }

    /// <summary>Row <paramref name="r"/>'s codes gathered into this thread's scratch: valid until the next call on the
    /// thread.</summary>
    public override ReadOnlySpan<byte> RawRow(int r)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)r, (uint)Rows, nameof(r));
        Span<byte> row = LinearScratch.StoredRow(checked((int)RowBytes));
        if (_runs)
        {
            Fp8Runs.Restore(Piece(r, 0), row);
            return row;
        }
        for (int p0 = 0; p0 < Cols; p0 += _panel)
        {
            Span<byte> piece = Piece(r, p0);
            piece.CopyTo(row[(p0 * TC.Bytes)..]);
        }
        return row;
    }

    private protected override ReadOnlySpan<byte> CodesInSomeOrder(int r) => _runs ? Piece(r, 0) : RawRow(r);

    private protected override int RowUnit(int n) => _groupRows;

    /// <summary>Whether every row of the group starting at row <paramref name="g"/> widens exactly.</summary>
    private bool WholeGroupWidens(int g)
    {
        for (int r = g; r < g + _groupRows; r++)
            if (!Widens(r)) return false;
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        if (_runs)
        {
            RunRows(x, y, n, r0, r1, rowStart, rowCount);
            return;
        }
        if (n != 1)
        {
            base.DotRows(a, x, y, n, r0, r1, rowStart, rowCount); // rows gathered one at a time
            return;
        }
        int cols = Cols, br = Block.Rows;
        bool inPlace = ReadsInPlace(x);
        Span<float> scratch = inPlace ? default : LinearScratch.Row(cols);
        if (Plain && !inPlace) new ReadOnlySpan<float>(x, cols).CopyTo(scratch);
        int groupRows = _groupRows;
        float* carried = stackalloc float[WidenedDot<TC>.PanelRows * 64];
        float* lanes = stackalloc float[WidenedDot<TC>.PanelRows];
        var xs = new ReadOnlySpan<float>(x, cols);
        for (int b0 = r0; b0 < r1; b0 = (b0 / br + 1) * br)
        {
            int b1 = Math.Min(r1, (b0 / br + 1) * br);
            ReadOnlySpan<float> scales = RowScales(b0);
            bool widened = Plain || WidenedDot<TC>.ScaleActivations(xs, scales, BlockCols, scratch);
            fixed (float* pScratch = scratch)
            {
                float* scaled = inPlace ? x : pScratch;
                for (int g = b0 / groupRows * groupRows; g < b1; g += groupRows)
                {
                    int lo = Math.Max(b0, g), hi = Math.Min(b1, g + groupRows);
                    if (Quads && widened && lo == g)
                    {
                        // A run of whole groups whose rows all widen: one call, straight into y.
                        int end = g;
                        while (end + groupRows <= b1 && WholeGroupWidens(end)) end += groupRows;
                        if (end > g)
                        {
                            WidenedDot<TC>.Quads(GroupOf(g), (end - g) / groupRows, _quadsPerGroup, cols, _quadPanel, scaled, carried, y + (g - rowStart));
                            g = end - groupRows;
                            continue;
                        }
                    }
                    bool whole = widened;
                    for (int r = lo; r < hi; r++) whole &= Widens(r);
                    if (whole)
                    {
                        if (Quads) WidenedDot<TC>.Quads(GroupOf(g), 1, _quadsPerGroup, cols, _quadPanel, scaled, carried, lanes);
                        else WidenedDot<TC>.Panels(GroupOf(g), cols, Panel, scaled, carried, lanes);
                        for (int r = lo; r < hi; r++) y[r - rowStart] = lanes[r - g];
                        continue;
                    }
                    for (int r = lo; r < hi; r++)
                        y[r - rowStart] = widened && Widens(r)
                            ? WidenedDot<TC>.Compute(RawRow(r), new ReadOnlySpan<float>(scaled, cols))
                            : Unwidened(RawRow(r), scales, x, 0);
                }
            }
        }
    }

    /// <summary>Rows in runs against any number of tokens: per block row, a few tokens' scaled activations at a time,
    /// then three or two tokens at a time against each row, all at once where all widen (<see cref="Fp8Runs.Compute3"/>,
    /// <see cref="Fp8Runs.Compute2"/>), else one by one (<see cref="Fp8Runs.Compute"/>; a row with a special code, or a
    /// token whose scaled activations overflow, from the codes' values as the file layout computes it). Threes go first
    /// but never leave a token alone that a pair could take (four tokens are two pairs, five a three and a pair): one
    /// widening feeds twelve sums instead of eight. `bench stream --in-cache --tokens N FP8` on Zen 3, pairs only
    /// against this, two rounds alternating, GB/s of weights: three tokens 8.7 → 11.3, five 5.4 → 6.2–6.3, eight 3.6 →
    /// 4.0, twelve 2.4 → 2.6, four 7.2–7.4 both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RunRows(float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        int cols = Cols, br = Block.Rows;
        Span<float> scaled = LinearScratch.Row(Math.Min(n, TokenGroup) * cols);
        Span<bool> widened = stackalloc bool[TokenGroup];
        float* shared = stackalloc float[3]; // the results of tokens taken together
        fixed (float* ps = scaled)
            for (int b0 = r0; b0 < r1; b0 = (b0 / br + 1) * br)
            {
                int b1 = Math.Min(r1, (b0 / br + 1) * br);
                ReadOnlySpan<float> scales = RowScales(b0);
                for (int t0 = 0; t0 < n; t0 += TokenGroup)
                {
                    int group = Math.Min(TokenGroup, n - t0);
                    ScaleTokens(x, t0, group, scales, scaled, widened);
                    // Two tokens at a time against every row of the block row: their activations stay in L1 while
                    // the rows come from L2 (a block row of 128 rows of 2,048 codes is 256 KB). `bench stream
                    // --in-cache --tokens 16 FP8` on Zen 3: 1.4 GB/s rows outer and tokens inner, 1.8 this way.
                    for (int t = 0, step; t < group; t += step)
                    {
                        int left = group - t; // three at a time, but never leaving one token alone that two could pair
                        bool three = (left == 3 || left >= 5) && widened[t] && widened[t + 1] && widened[t + 2];
                        bool two = !three && t + 1 < group && widened[t] && widened[t + 1];
                        step = three ? 3 : 2;
                        for (int o = b0; o < b1; o++)
                        {
                            bool exact = Widens(o);
                            if (three && exact)
                            {
                                Fp8Runs.Compute3(GroupOf(o), cols, ps + (long)t * cols, ps + (long)(t + 1) * cols, ps + (long)(t + 2) * cols, shared);
                                y[(long)(t0 + t) * rowCount + o - rowStart] = shared[0];
                                y[(long)(t0 + t + 1) * rowCount + o - rowStart] = shared[1];
                                y[(long)(t0 + t + 2) * rowCount + o - rowStart] = shared[2];
                                continue;
                            }
                            if (two && exact)
                            {
                                Fp8Runs.Compute2(GroupOf(o), cols, ps + (long)t * cols, ps + (long)(t + 1) * cols, shared);
                                y[(long)(t0 + t) * rowCount + o - rowStart] = shared[0];
                                y[(long)(t0 + t + 1) * rowCount + o - rowStart] = shared[1];
                                continue;
                            }
                            for (int u = t; u < Math.Min(group, t + step); u++)
                                y[(long)(t0 + u) * rowCount + o - rowStart] = exact && widened[u]
                                    ? Fp8Runs.Compute(GroupOf(o), cols, ps + (long)u * cols)
                                    : Unwidened(RawRow(o), scales, x, t0 + u);
                        }
                    }
                }
            }
    }
}
