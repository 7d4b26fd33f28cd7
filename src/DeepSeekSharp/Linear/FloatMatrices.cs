using System.Runtime.CompilerServices;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>F32: rows dotted with the activations as they are.</summary>
internal sealed unsafe class F32Matrix(int rows, int cols, byte* data, IDisposable? owner) : Matrix(WeightFormat.F32, rows, cols, data, owner)
{
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
}

/// <summary>BF16: computed directly, each row widened to float32 in registers (<see cref="Bf16Dot"/>).</summary>
internal sealed unsafe class Bf16Matrix(int rows, int cols, byte* data, IDisposable? owner) : Matrix(WeightFormat.BF16, rows, cols, data, owner)
{
    private ReadOnlySpan<ushort> Row(int r) => new(RowPointer(r), Cols);

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

/// <summary>Formats without a fused kernel (the GGUF types Q4_1, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL,
/// IQ4_XS): each row is dequantised into per-thread scratch once and dotted with every token (the row is read once
/// per product, as for the other formats).</summary>
internal unsafe class RowDequantMatrix : Matrix
{
    public RowDequantMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner) : base(format, rows, cols, data, owner) { }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        Span<float> row = LinearScratch.Row(Cols);
        for (int o = r0; o < r1; o++)
        {
            DequantizeRow(o, row);
            for (int t = 0; t < n; t++) y[(long)t * rowCount + o - rowStart] = Dot.Compute(row, new ReadOnlySpan<float>(x + (long)t * Cols, Cols));
        }
    }
}

/// <summary>Float codes widened in registers (<see cref="WidenedDot{TC}"/>: FP8 E4M3, F16), with one float scale per
/// block of rows × columns (FP8's weight_scale_inv; F16 is one block of scale 1). Per block row, each token's
/// activations are multiplied by the block's column scales and the format's factor once (into per-thread scratch, a
/// few tokens at a time), then every row of the block is a dot product of widened codes with them. One token alone or
/// in a batch gets the same arithmetic. A row holding a code the widening gets wrong (FP8 NaN, F16 infinity or NaN) is
/// found the first time it is used and computed from the codes' values.</summary>
internal unsafe class WidenedMatrix<TC> : Matrix where TC : struct, IWidenedCodes
{
    /// <summary>Tokens whose scaled activations are held at once (scratch: this many × Cols floats per thread).</summary>
    internal const int TokenGroup = 8;

    private readonly float[] _scales; // [ceil(rows / br), ceil(cols / bc)]
    private readonly int _br, _bc, _scaleCols;
    private readonly byte[] _rowState; // 0 not yet looked at, 1 widens exactly, 2 holds a special code

    public WidenedMatrix(WeightFormat format, int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner)
        : base(format, rows, cols, codes, owner)
    {
        (_br, _bc) = block;
        _scaleCols = (cols + _bc - 1) / _bc;
        if (scales.Length != (rows + _br - 1) / _br * _scaleCols)
            throw new ArgumentException($"{scales.Length} block scales; a [{rows}, {cols}] {format} matrix with {_br}x{_bc} blocks needs {(rows + _br - 1) / _br * _scaleCols}", nameof(scales));
        _scales = scales;
        _rowState = new byte[rows];
    }

    private protected ReadOnlySpan<float> RowScales(int r) => _scales.AsSpan(r / _br * _scaleCols, _scaleCols);

    /// <summary>Whether row <paramref name="r"/> widens exactly (no special code); looked at on its first use.</summary>
    private protected bool Widens(int r)
    {
        if (_rowState[r] == 0) _rowState[r] = TC.HasSpecialCode(RawRow(r)) ? (byte)2 : (byte)1;
        return _rowState[r] == 1;
    }
    private protected int BlockCols => _bc;
    private protected (int Rows, int Cols) Block => (_br, _bc);
    private protected float ScaleAt(int rowBlock, int colBlock) => _scales[rowBlock * _scaleCols + colBlock];

    public override void SetRow(int r, ReadOnlySpan<float> values)
    {
        base.SetRow(r, values);
        _rowState[r] = 0; // looked at again on next use
    }

    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        base.ReadStoredRows(r0, count, fill);
        _rowState.AsSpan(r0, count).Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        int cols = Cols;
        Span<float> scaled = LinearScratch.Row(Math.Min(n, TokenGroup) * cols);
        Span<bool> widened = stackalloc bool[TokenGroup];
        Span<float> four = stackalloc float[4];
        for (int b0 = r0; b0 < r1; b0 = (b0 / _br + 1) * _br)
        {
            int b1 = Math.Min(r1, (b0 / _br + 1) * _br);
            ReadOnlySpan<float> scales = RowScales(b0);
            for (int t0 = 0; t0 < n; t0 += TokenGroup)
            {
                int group = Math.Min(TokenGroup, n - t0);
                for (int t = 0; t < group; t++)
                    widened[t] = WidenedDot<TC>.ScaleActivations(new ReadOnlySpan<float>(x + (long)(t0 + t) * cols, cols), scales, _bc, scaled.Slice(t * cols, cols));
                // Four tokens share each widened code where all four take the widened path (same bits as one at a time).
                bool fours = WidenedDot<TC>.FourAtOnce && group >= 4;
                for (int o = b0; o < b1; o++)
                {
                    bool exact = Widens(o);
                    ReadOnlySpan<byte> codes = RawRow(o);
                    int t = 0;
                    if (fours && exact)
                        for (; t + 4 <= group; t += 4)
                        {
                            if (!(widened[t] && widened[t + 1] && widened[t + 2] && widened[t + 3])) break;
                            WidenedDot<TC>.Compute4(codes, scaled.Slice(t * cols), cols, four);
                            for (int k = 0; k < 4; k++) y[(long)(t0 + t + k) * rowCount + o - rowStart] = four[k];
                        }
                    for (; t < group; t++)
                        y[(long)(t0 + t) * rowCount + o - rowStart] = widened[t] && exact
                            ? WidenedDot<TC>.Compute(codes, scaled.Slice(t * cols, cols))
                            : WidenedDot<TC>.Unwidened(codes, scales, _bc, new ReadOnlySpan<float>(x + (long)(t0 + t) * cols, cols));
                }
            }
        }
    }
}

/// <summary>IEEE half-precision weights (F16 checkpoints and GGUF files), widened in registers: the whole matrix is one
/// block of scale 1 (none when it is empty).</summary>
internal sealed unsafe class F16Matrix(int rows, int cols, byte* data, IDisposable? owner)
    : WidenedMatrix<F16Codes>(WeightFormat.F16, rows, cols, data, rows > 0 && cols > 0 ? [1f] : [], (Math.Max(rows, 1), Math.Max(cols, 1)), owner);

/// <summary>FP8 E4M3 codes as V3/R1 ship them (one byte per weight) with one float scale per block of rows × columns.</summary>
internal unsafe class Fp8Matrix(int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner)
    : WidenedMatrix<Fp8Codes>(WeightFormat.FP8, rows, cols, codes, scales, block, owner)
{
    public override void DequantizeRow(int r, Span<float> dst) => Fp8Rows.Dequantize(RawRow(r), RowScales(r), BlockCols, dst);

    /// <summary>Rows [h·<paramref name="headRows"/>, h·headRows + <paramref name="part"/>) of every head h transposed
    /// and stacked ([heads · Cols, part]; row h·Cols + c holds column c of head h's part) as FP8 again: the same codes,
    /// moved, and the same values — each block of the part keeps its scale, its rows and columns swapped. For
    /// absorbed MLA's W_UK (kv_b_proj's k_nope rows per head), one byte a weight instead of float32's four. Null when
    /// a head's part is not whole blocks (a block straddling two heads' rows or the part's end).</summary>
    internal Fp8Matrix? TransposeHeadParts(int heads, int headRows, int part)
    {
        (int br, int bc) = Block;
        if (heads <= 0 || part <= 0 || (long)heads * headRows != Rows || headRows % br != 0 || part % br != 0 || Cols % bc != 0) return null;
        int cols = Cols, partBlocks = part / br;
        var buffer = new NativeBuffer((long)heads * cols * part, weights: true);
        try
        {
            byte* t = buffer.Pointer;
            for (int h = 0; h < heads; h++)
                for (int d = 0; d < part; d++)
                {
                    ReadOnlySpan<byte> row = RawRow(h * headRows + d);
                    byte* column = t + (long)h * cols * part + d;
                    for (int c = 0; c < cols; c++) column[(long)c * part] = row[c];
                }
            // Transposed block (h, c / bc, d / br) is original block (h·headRows / br + d / br, c / bc).
            var scales = new float[heads * (cols / bc) * partBlocks];
            for (int h = 0; h < heads; h++)
                for (int cb = 0; cb < cols / bc; cb++)
                    for (int db = 0; db < partBlocks; db++)
                        scales[(h * (cols / bc) + cb) * partBlocks + db] = ScaleAt((h * headRows) / br + db, cb);
            return new Fp8Matrix(heads * cols, part, t, scales, (bc, br), buffer);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    public override void SetRow(int r, ReadOnlySpan<float> values) =>
        throw new NotSupportedException("FP8 matrices hold checkpoint codes; convert to another format instead");
}

/// <summary>FP8 with rows too wide for their activations to stay in L1 beside them (V3's o_proj: 16,384 columns, 64 KB
/// of float32 activations), kept as groups of sixteen rows interleaved by panels of <see cref="Panel"/> columns: group
/// g holds, panel after panel, the sixteen rows' codes of that panel, row k at k · (panel width). One token reads a
/// group as one stream and each panel of activations from L1 for all sixteen rows (<see cref="WidenedDot{TC}.Panels"/>:
/// each row's accumulators carried across the panels in <see cref="Dot"/>'s order, so the same bits as the file
/// layout). `bench fp8-panels` on Zen 5, 16,384 columns: 19 → 32 GB/s on two threads, 10 → 18 on one. More tokens,
/// and a row with a special code, take the file layout's kernels on the row gathered (<see cref="RawRow"/>).</summary>
internal sealed unsafe class Fp8PanelMatrix : Fp8Matrix
{
    /// <summary>Columns per panel.</summary>
    public const int Panel = 2048;
    private const int GroupRows = WidenedDot<Fp8Codes>.PanelRows;
    private readonly byte* _groups;

    private Fp8PanelMatrix(int rows, int cols, byte* groups, float[] scales, (int Rows, int Cols) block, NativeBuffer owner)
        : base(rows, cols, groups, scales, block, owner) => _groups = groups;

    /// <summary>Whether a [rows, cols] FP8 matrix with these blocks is kept in panels here: rows wider than two panels,
    /// block rows whole groups of sixteen, and the 512-bit widened kernel on this CPU.</summary>
    public static bool Suits(int cols, (int Rows, int Cols) block) => cols > 2 * Panel && block.Rows % GroupRows == 0 && WidenedDot<Fp8Codes>.FourAtOnce;

    /// <summary>A copy of [rows, cols] codes in the file layout (<paramref name="codes"/>) in panels.</summary>
    public static Fp8PanelMatrix From(int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block) =>
        Read(rows, cols, scales, block, (r0, dst) => new ReadOnlySpan<byte>(codes + (long)r0 * cols, dst.Length).CopyTo(dst));

    /// <summary>[rows, cols] codes read in parallel tasks of rows (<paramref name="read"/>(first row, its rows' bytes in
    /// the file layout)) straight into panels: no copy of the whole matrix in the file layout on the way.</summary>
    public static Fp8PanelMatrix Read(int rows, int cols, float[] scales, (int Rows, int Cols) block, Action<int, Span<byte>> read)
    {
        long groups = (rows + GroupRows - 1) / GroupRows;
        var buffer = new NativeBuffer(groups * GroupRows * cols, weights: true);
        try
        {
            // Padding rows of the last group: zero codes (numbers; their results are never stored).
            new Span<byte>(buffer.Pointer + (long)rows * cols, checked((int)((groups * GroupRows - rows) * cols))).Clear();
            RowTasks.Run(rows, (r0, r1) =>
            {
                // A task's rows in the file layout (up to 1.2 MB): pooled, not a large-object allocation per task.
                byte[] stored = System.Buffers.ArrayPool<byte>.Shared.Rent((r1 - r0) * cols);
                try
                {
                    read(r0, stored.AsSpan(0, (r1 - r0) * cols));
                    for (int r = r0; r < r1; r++) Scatter(buffer.Pointer, cols, r, stored.AsSpan((r - r0) * cols, cols));
                }
                finally { System.Buffers.ArrayPool<byte>.Shared.Return(stored); }
            });
            return new Fp8PanelMatrix(rows, cols, buffer.Pointer, scales, block, buffer);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Row <paramref name="r"/>'s codes into their places in the groups.</summary>
    private static void Scatter(byte* groups, int cols, int r, ReadOnlySpan<byte> row)
    {
        for (int p0 = 0; p0 < cols; p0 += Panel) row.Slice(p0, Math.Min(Panel, cols - p0)).CopyTo(Piece(groups, cols, r, p0));
    }

    /// <summary>The group holding row <paramref name="r"/>.</summary>
    private static byte* GroupOf(byte* groups, int cols, int r) => groups + (long)(r / GroupRows) * GroupRows * cols;

    /// <summary>Row <paramref name="r"/>'s codes of the panel starting at column <paramref name="p0"/>.</summary>
    private static Span<byte> Piece(byte* groups, int cols, int r, int p0)
    {
        int w = Math.Min(Panel, cols - p0);
        return new Span<byte>(GroupOf(groups, cols, r) + (long)GroupRows * p0 + (long)(r % GroupRows) * w, w);
    }

    /// <summary>Row <paramref name="r"/>'s codes gathered into this thread's scratch: valid until the next call on the
    /// thread.</summary>
    public override ReadOnlySpan<byte> RawRow(int r)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)r, (uint)Rows, nameof(r));
        int cols = Cols;
        Span<byte> row = LinearScratch.StoredRow(cols);
        for (int p0 = 0; p0 < cols; p0 += Panel) Piece(_groups, cols, r, p0).CopyTo(row[p0..]);
        return row;
    }

    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill) =>
        throw new NotSupportedException("FP8 rows kept in panels are made from a whole matrix of codes (Fp8PanelMatrix.From)");

    private protected override int RowUnit(int n) => GroupRows;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        if (n != 1)
        {
            base.DotRows(a, x, y, n, r0, r1, rowStart, rowCount); // rows gathered one at a time
            return;
        }
        int cols = Cols, br = Block.Rows;
        Span<float> scaled = LinearScratch.Row(cols);
        float* carried = stackalloc float[GroupRows * 64];
        float* lanes = stackalloc float[GroupRows];
        var xs = new ReadOnlySpan<float>(x, cols);
        for (int b0 = r0; b0 < r1; b0 = (b0 / br + 1) * br)
        {
            int b1 = Math.Min(r1, (b0 / br + 1) * br);
            ReadOnlySpan<float> scales = RowScales(b0);
            bool widened = WidenedDot<Fp8Codes>.ScaleActivations(xs, scales, BlockCols, scaled);
            for (int g = b0 / GroupRows * GroupRows; g < b1; g += GroupRows)
            {
                int lo = Math.Max(b0, g), hi = Math.Min(b1, g + GroupRows);
                bool whole = widened;
                for (int r = lo; r < hi; r++) whole &= Widens(r);
                if (whole)
                {
                    fixed (float* ps = scaled)
                        WidenedDot<Fp8Codes>.Panels(GroupOf(_groups, cols, g), cols, Panel, ps, carried, lanes);
                    for (int r = lo; r < hi; r++) y[r - rowStart] = lanes[r - g];
                    continue;
                }
                for (int r = lo; r < hi; r++)
                    y[r - rowStart] = widened && Widens(r)
                        ? WidenedDot<Fp8Codes>.Compute(RawRow(r), scaled)
                        : WidenedDot<Fp8Codes>.Unwidened(RawRow(r), scales, BlockCols, xs);
            }
        }
    }
}
