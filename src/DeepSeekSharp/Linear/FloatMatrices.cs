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

/// <summary>Float codes widened in registers (<see cref="WidenedDot{TC}"/>: FP8 E4M3, F16, BF16), with one float scale
/// per block of rows × columns (FP8's weight_scale_inv; F16 and BF16 are one block of scale 1). Per block row, each
/// token's activations are multiplied by the block's column scales and the format's factor once (into per-thread
/// scratch, a few tokens at a time; BF16's factor and scale are 1, so its activations are used as they are), then every
/// row of the block is a dot product of widened codes with them. One token alone or
/// in a batch gets the same arithmetic. A row holding a code the widening gets wrong (FP8 NaN, F16 infinity or NaN) is
/// found the first time it is used and computed from the codes' values.</summary>
internal unsafe class WidenedMatrix<TC> : Matrix where TC : struct, IWidenedCodes
{
    /// <summary>Tokens whose scaled activations are held at once (scratch: this many × Cols floats per thread).</summary>
    internal const int TokenGroup = 8;

    private readonly float[] _scales; // [ceil(rows / br), ceil(cols / bc)]
    private readonly int _br, _bc, _scaleCols;
    private readonly byte[] _rowState; // 0 not yet looked at, 1 widens exactly, 2 holds a special code
    private readonly bool _unitScales; // every block scale 1: rows can be set from values
    private readonly bool _plain;      // factor and scales 1: activations used as they are, no scaled copy

    public WidenedMatrix(WeightFormat format, int rows, int cols, byte* codes, float[] scales, (int Rows, int Cols) block, IDisposable? owner)
        : base(format, rows, cols, codes, owner)
    {
        (_br, _bc) = block;
        _scaleCols = (cols + _bc - 1) / _bc;
        if (scales.Length != (rows + _br - 1) / _br * _scaleCols)
            throw new ArgumentException($"{scales.Length} block scales; a [{rows}, {cols}] {format} matrix with {_br}x{_bc} blocks needs {(rows + _br - 1) / _br * _scaleCols}", nameof(scales));
        _scales = scales;
        _rowState = new byte[rows];
        _unitScales = Array.TrueForAll(scales, v => v == 1f);
        _plain = TC.Factor == 1f && _unitScales;
    }

    /// <summary>Whether the activations are used as they are (factor and every scale 1: BF16), not scaled.</summary>
    private protected bool Plain => _plain;

    /// <summary>Whether the kernels read the activations at <paramref name="x"/> where they lie: unscaled, and on a
    /// 64-byte boundary (elsewhere they are copied to this thread's aligned scratch, since 512-bit loads split across
    /// cache lines cost the kernel a quarter of its speed).</summary>
    private protected bool ReadsInPlace(float* x) => _plain && (nint)x % 64 == 0;

    private protected ReadOnlySpan<float> RowScales(int r) => _scales.AsSpan(r / _br * _scaleCols, _scaleCols);

    /// <summary>Whether row <paramref name="r"/> widens exactly (no special code); looked at on its first use.</summary>
    private protected bool Widens(int r)
    {
        if (_rowState[r] == 0) _rowState[r] = TC.HasSpecialCode(CodesInSomeOrder(r)) ? (byte)2 : (byte)1;
        return _rowState[r] == 1;
    }

    /// <summary>Row <paramref name="r"/>'s codes, in the file's order or any other (what <see cref="Widens"/> looks
    /// at): a layout that keeps a row's codes together, permuted, gives them without gathering them.</summary>
    private protected virtual ReadOnlySpan<byte> CodesInSomeOrder(int r) => RawRow(r);

    /// <summary>Tokens t0 .. t0 + group − 1 of <paramref name="x"/> ([tokens, Cols]) scaled for a block row's
    /// <paramref name="scales"/> into <paramref name="scaled"/> (token t0 + t at t · Cols); widened[t] false where that
    /// token's product must be taken unwidened (<see cref="WidenedDot{TC}.ScaleActivations"/>).</summary>
    private protected void ScaleTokens(float* x, int t0, int group, ReadOnlySpan<float> scales, Span<float> scaled, Span<bool> widened)
    {
        int cols = Cols;
        for (int t = 0; t < group; t++)
            widened[t] = WidenedDot<TC>.ScaleActivations(new ReadOnlySpan<float>(x + (long)(t0 + t) * cols, cols), scales, _bc, scaled.Slice(t * cols, cols));
    }

    /// <summary>Token <paramref name="token"/> of <paramref name="x"/> against a row's file-layout codes from their
    /// values (<see cref="WidenedDot{TC}.Unwidened"/>): a row with a special code, or a token whose scaled activations
    /// overflow.</summary>
    private protected float Unwidened(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, float* x, int token) =>
        WidenedDot<TC>.Unwidened(codes, scales, _bc, new ReadOnlySpan<float>(x + (long)token * Cols, Cols));
    private protected int BlockCols => _bc;
    private protected (int Rows, int Cols) Block => (_br, _bc);
    private protected float ScaleAt(int rowBlock, int colBlock) => _scales[rowBlock * _scaleCols + colBlock];

    /// <summary>Rows [r0, r0 + count) changed: looked at again on their next use.</summary>
    private protected void Forget(int r0, int count) => _rowState.AsSpan(r0, count).Clear();

    /// <summary>Rows [h·<paramref name="headRows"/>, h·headRows + <paramref name="part"/>) of every head h transposed
    /// and stacked ([heads · Cols, part]; row h·Cols + c holds column c of head h's part) in this format again: the same
    /// codes, moved, and the same values — each block of the part keeps its scale, its rows and columns swapped. For
    /// absorbed MLA's W_UK (kv_b_proj's k_nope rows per head): FP8 stays one byte a weight instead of float32's four.
    /// Kept as a <see cref="PanelMatrix{TC}"/> where one suits the transposed rows (FP8 rows of 128: quads), else in the
    /// file layout. Null when a head's part is not whole blocks (a block straddling two heads' rows or the part's end).</summary>
    internal Matrix? TransposeHeadParts(int heads, int headRows, int part)
    {
        if (heads <= 0 || part <= 0 || (long)heads * headRows != Rows || headRows % _br != 0 || part % _br != 0 || Cols % _bc != 0) return null;
        int cols = Cols, partBlocks = part / _br, bytes = TC.Bytes;
        var buffer = new NativeBuffer((long)heads * cols * part * bytes, weights: true);
        var scales = new float[heads * (cols / _bc) * partBlocks];
        (int Rows, int Cols) block = (_bc, _br);
        byte* t = buffer.Pointer;
        try
        {
            for (int h = 0; h < heads; h++)
                for (int d = 0; d < part; d++)
                {
                    ReadOnlySpan<byte> row = RawRow(h * headRows + d);
                    byte* column = t + ((long)h * cols * part + d) * bytes;
                    for (int c = 0; c < cols; c++)
                        for (int k = 0; k < bytes; k++) column[((long)c * part) * bytes + k] = row[c * bytes + k];
                }
            // Transposed block (h, c / bc, d / br) is original block (h·headRows / br + d / br, c / bc).
            for (int h = 0; h < heads; h++)
                for (int cb = 0; cb < cols / _bc; cb++)
                    for (int db = 0; db < partBlocks; db++)
                        scales[(h * (cols / _bc) + cb) * partBlocks + db] = ScaleAt((h * headRows) / _br + db, cb);
            if (!PanelMatrix<TC>.Suits(heads * cols, part, block)) return new WidenedMatrix<TC>(Format, heads * cols, part, t, scales, block, buffer);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
        using (buffer) return PanelMatrix<TC>.From(Format, heads * cols, part, t, scales, block);
    }

    public override void DequantizeRow(int r, Span<float> dst) => TC.Dequantize(RawRow(r), RowScales(r), _bc, dst);

    public override void SetRow(int r, ReadOnlySpan<float> values)
    {
        CheckRowRange(r, 1);
        if (Traits.Quantizer is null || !_unitScales)
            throw new NotSupportedException($"{Format} matrices hold checkpoint codes with block scales; convert to another format instead");
        SetCodes(r, values);
        Forget(r, 1);
    }

    /// <summary>Row <paramref name="r"/>'s codes from float32 values (the format's quantiser).</summary>
    private protected virtual void SetCodes(int r, ReadOnlySpan<float> values) => base.SetRow(r, values);

    public override void ReadStoredRows(int r0, int count, Action<Span<byte>> fill)
    {
        base.ReadStoredRows(r0, count, fill);
        Forget(r0, count);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? a, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        int cols = Cols;
        bool inPlace = ReadsInPlace(x);
        Span<float> scaled = inPlace ? default : LinearScratch.Row(Math.Min(n, TokenGroup) * cols);
        Span<bool> widened = stackalloc bool[TokenGroup];
        Span<float> shared = stackalloc float[4]; // the results of tokens taken together
        int together = WidenedDot<TC>.FourAtOnce ? 4 : WidenedDot<TC>.ThreeAtOnce ? 3 : 1; // tokens a widening serves
        for (int b0 = r0; b0 < r1; b0 = (b0 / _br + 1) * _br)
        {
            int b1 = Math.Min(r1, (b0 / _br + 1) * _br);
            ReadOnlySpan<float> scales = RowScales(b0);
            for (int t0 = 0; t0 < n; t0 += TokenGroup)
            {
                int group = Math.Min(TokenGroup, n - t0);
                if (_plain)
                {
                    // No code is special and nothing is scaled: the widened product is the product, whatever x holds.
                    var tokens = new Span<float>(x + (long)t0 * cols, group * cols);
                    if (inPlace) scaled = tokens;
                    else tokens.CopyTo(scaled);
                    widened[..group].Fill(true);
                }
                else
                    ScaleTokens(x, t0, group, scales, scaled, widened);
                // Four tokens (AVX-512) or three (AVX2) share each widened code where all take the widened path (same
                // bits as one at a time).
                for (int o = b0; o < b1; o++)
                {
                    bool exact = Widens(o);
                    ReadOnlySpan<byte> codes = RawRow(o);
                    int t = 0;
                    if (together > 1 && exact)
                        for (; t + together <= group; t += together)
                        {
                            if (widened.Slice(t, together).Contains(false)) break;
                            if (together == 4) WidenedDot<TC>.Compute4(codes, scaled.Slice(t * cols), cols, shared);
                            else WidenedDot<TC>.Compute3(codes, scaled.Slice(t * cols), cols, shared);
                            for (int k = 0; k < together; k++) y[(long)(t0 + t + k) * rowCount + o - rowStart] = shared[k];
                        }
                    for (; t < group; t++)
                        y[(long)(t0 + t) * rowCount + o - rowStart] = widened[t] && exact
                            ? WidenedDot<TC>.Compute(codes, scaled.Slice(t * cols, cols))
                            : Unwidened(codes, scales, x, t0 + t);
                }
            }
        }
    }
}

/// <summary>BF16 weights (checkpoints as DeepSeek ships them, GGUF files), widened in registers: the whole matrix is one
/// block of scale 1, so the activations are used as they are.</summary>
internal sealed unsafe class Bf16Matrix(int rows, int cols, byte* data, IDisposable? owner)
    : WidenedMatrix<Bf16Codes>(WeightFormat.BF16, rows, cols, data, UnitScale.For(rows, cols), UnitScale.Block(rows, cols), owner);

/// <summary>IEEE half-precision weights (F16 checkpoints and GGUF files), widened in registers: the whole matrix is one
/// block of scale 1.</summary>
internal sealed unsafe class F16Matrix(int rows, int cols, byte* data, IDisposable? owner)
    : WidenedMatrix<F16Codes>(WeightFormat.F16, rows, cols, data, UnitScale.For(rows, cols), UnitScale.Block(rows, cols), owner);

/// <summary>The one block of scale 1 that BF16 and F16 matrices are (none when the matrix is empty).</summary>
internal static class UnitScale
{
    public static float[] For(int rows, int cols) => rows > 0 && cols > 0 ? [1f] : [];
    public static (int Rows, int Cols) Block(int rows, int cols) => (Math.Max(rows, 1), Math.Max(cols, 1));
}


