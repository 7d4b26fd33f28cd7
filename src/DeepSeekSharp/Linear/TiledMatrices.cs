using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Linear;

/// <summary>A format kept as sixteen interleaved rows (tiles the kernels read front to back): a row is converted from
/// and to the GGUF layout on the way in and out (loading, dequantising a row); products compute a group's sixteen
/// rows and keep those asked for. Rows past the last whole sixteen are padding (zero).</summary>
/// <param name="groupBytes">bytes of a group of sixteen rows</param>
internal abstract unsafe class TiledMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner, long groupBytes)
    : Matrix(format, rows, cols, data, owner)
{
    private protected const int TileRows = 16;
    private readonly byte* _tiles = data;

    /// <summary>Bytes of a matrix of <paramref name="rows"/> in groups of sixteen rows of <paramref name="groupBytes"/>.</summary>
    private protected static long BytesFor(int rows, long groupBytes) => (long)(rows + TileRows - 1) / TileRows * groupBytes;

    public override long Bytes => BytesFor(Rows, groupBytes);

    /// <summary>Bytes of one group of sixteen rows.</summary>
    private protected long GroupBytes => groupBytes;

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

    /// <summary>Not kept here: rows are interleaved (<see cref="DequantizeRow"/> gives a row's values).</summary>
    public override ReadOnlySpan<byte> RawRow(int r) =>
        throw new NotSupportedException($"{Format} rows are kept interleaved in tiles; there are no stored bytes of one row to return");

    private protected byte* Group(int r) => _tiles + (long)(r / TileRows) * groupBytes;

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
        // Tasks start at multiples of their size (a multiple of sixteen) counted from row 0, so no group is split
        // between two tasks (Q5_0 tiles keep rows r and r + 8 in the same bytes).
        int firstTask = r0 / RowTasks.RowsPerTask * RowTasks.RowsPerTask;
        RowTasks.Run(r0 + count - firstTask, (i0, i1) =>
        {
            for (int r = Math.Max(r0, firstTask + i0); r < firstTask + i1; r++)
                SetStoredRow(stored.AsSpan((r - r0) * rowBytes, rowBytes), Group(r), r % TileRows);
        });
    }

    private protected override int RowUnit(int n) => TileRows;

    /// <summary>Rows [lo, hi) of a group's sixteen results in <paramref name="lanes"/> to y (row lo at y[0]).</summary>
    private protected static void Store(float* lanes, float* y, int lo, int hi)
    {
        for (int r = lo; r < hi; r++) y[r - lo] = lanes[r];
    }
}

/// <summary>A k-quant in tiles (<see cref="Q4KTiles"/>, <see cref="Q5KTiles"/>, <see cref="Q6KTiles"/>, <see cref="LowBitKTiles"/>: AVX2, 512-bit kernels with AVX-512).</summary>
internal abstract unsafe class TiledKMatrix(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner, long groupBytes)
    : TiledMatrix(format, rows, cols, data, owner, groupBytes)
{
    private protected int SuperBlocks => Cols / 256;

    /// <summary>Token <paramref name="token"/> against a tile group's sixteen rows, row r's result in lanes[r].</summary>
    private protected abstract void One(byte* group, QuantizedActivations a, int token, float* lanes);

    /// <summary>Tokens <paramref name="token"/> .. + 3 against a tile group, token t's row r in lanes[16t + r].</summary>
    private protected abstract void Four(byte* group, QuantizedActivations a, int token, float* lanes);

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
}

/// <summary>Q4_K in <see cref="Q4KTiles"/>.</summary>
internal sealed unsafe class Q4KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(WeightFormat.Q4_K, rows, cols, data, owner, GroupBytesFor(cols))
{
    private static long GroupBytesFor(int cols) => (long)(cols / 256) * Q4KTiles.Bytes;

    public static long BytesFor(int rows, int cols) => BytesFor(rows, GroupBytesFor(cols));

    public static Q4KTiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, GroupBytesFor(cols));
        return new Q4KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) =>
        Q4KTiles.SetRow(MemoryMarshal.Cast<byte, BlockQ4K>(stored), group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) =>
        Q4KTiles.GetRow(group, r, MemoryMarshal.Cast<byte, BlockQ4K>(stored));

    private protected override void One(byte* group, QuantizedActivations a, int token, float* lanes) => Q4KTiles.One(group, SuperBlocks, a, token, lanes);

    private protected override void Four(byte* group, QuantizedActivations a, int token, float* lanes) => Q4KTiles.Four(group, SuperBlocks, a, token, lanes);
}

/// <summary>Q5_K in <see cref="Q5KTiles"/>.</summary>
internal sealed unsafe class Q5KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(WeightFormat.Q5_K, rows, cols, data, owner, GroupBytesFor(cols))
{
    private static long GroupBytesFor(int cols) => (long)(cols / 256) * Q5KTiles.Bytes;

    public static long BytesFor(int rows, int cols) => BytesFor(rows, GroupBytesFor(cols));

    public static Q5KTiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, GroupBytesFor(cols));
        return new Q5KTiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) =>
        Q5KTiles.SetRow(MemoryMarshal.Cast<byte, BlockQ5K>(stored), group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) =>
        Q5KTiles.GetRow(group, r, MemoryMarshal.Cast<byte, BlockQ5K>(stored));

    private protected override void One(byte* group, QuantizedActivations a, int token, float* lanes) => Q5KTiles.One(group, SuperBlocks, a, token, lanes);

    private protected override void Four(byte* group, QuantizedActivations a, int token, float* lanes) => Q5KTiles.Four(group, SuperBlocks, a, token, lanes);
}

/// <summary>Q6_K in <see cref="Q6KTiles"/> (llama.cpp's choice for the output matrix of a Q4_K_M file).</summary>
internal sealed unsafe class Q6KTiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(WeightFormat.Q6_K, rows, cols, data, owner, GroupBytesFor(cols))
{
    private static long GroupBytesFor(int cols) => Q6KTiles.GroupBytes(cols / 256);

    public static long BytesFor(int rows, int cols) => BytesFor(rows, GroupBytesFor(cols));

    public static Q6KTiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, GroupBytesFor(cols));
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

/// <summary>Q2_K or Q3_K in <see cref="LowBitKTiles"/> (the formats of llama.cpp's smallest k-quant mixes).</summary>
internal sealed unsafe class LowBitKTiledMatrix<TL>(int rows, int cols, byte* data, IDisposable? owner)
    : TiledKMatrix(TL.TwoBit ? WeightFormat.Q2_K : WeightFormat.Q3_K, rows, cols, data, owner, LowBitKTiles.GroupBytes<TL>(cols / 256))
    where TL : struct, ILowBitTileLayout
{
    public static long BytesFor(int rows, int cols) => BytesFor(rows, LowBitKTiles.GroupBytes<TL>(cols / 256));

    public static LowBitKTiledMatrix<TL> Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, LowBitKTiles.GroupBytes<TL>(cols / 256));
        return new LowBitKTiledMatrix<TL>(rows, cols, buffer.Pointer, buffer);
    }

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        a.PrepareSums16(n);
        return a;
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) => LowBitKTiles.SetRow<TL>(stored, group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) => LowBitKTiles.GetRow<TL>(group, r, stored);

    private protected override void One(byte* group, QuantizedActivations a, int token, float* lanes) => LowBitKTiles.One<TL>(group, SuperBlocks, a, token, lanes);

    private protected override void Four(byte* group, QuantizedActivations a, int token, float* lanes) => LowBitKTiles.Four<TL>(group, SuperBlocks, a, token, lanes);
}

/// <summary>A 32-weight block format in tiles that give <see cref="ByteTiles"/>' column groups (AVX-VNNI): one or two
/// tokens take <see cref="ByteTiles.One{TCodes}"/>; more (drafts being verified, a batch, a prompt) take
/// <see cref="BlockGemm{T}.MultiplyBytes"/> on byte tiles — the stored ones (<see cref="Q8TiledMatrix"/>) or a few
/// groups unpacked once (<see cref="Q5TiledMatrix"/>).</summary>
internal abstract unsafe class ByteTiledMatrix<TBlock, TTile, TBytes>(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : TiledMatrix(format, rows, cols, data, owner, GroupBytesFor(cols))
    where TBlock : struct, IBlockCodes where TTile : struct, IByteTileCodes where TBytes : struct, IByteTileCodes
{
    private static long GroupBytesFor(int cols) => (long)(cols / 32) * TTile.TileBytes;

    /// <summary>Bytes of a matrix of this format in tiles.</summary>
    public static long BytesFor(int rows, int cols) => BytesFor(rows, GroupBytesFor(cols));

    /// <summary>Aligned native memory for a matrix of this format in tiles (<see cref="TiledMatrix.Allocate"/>).</summary>
    private protected static NativeBuffer Allocate(int rows, int cols) => Allocate(rows, GroupBytesFor(cols));

    /// <summary>Bytes of a group of sixteen rows as byte tiles (what <see cref="BlockGemm{T}.MultiplyBytes"/> reads).</summary>
    private protected long ByteGroupBytes => (long)(Cols / 32) * ByteTiles.BlockBytes;

    /// <summary>Whether <paramref name="n"/> tokens take <see cref="ByteTiles.Multiply{TCodes}"/>, straight from the
    /// tiles, where the CPU has AVX-512 but no VNNI (six tokens a pass; one or two left over take the one-token kernel
    /// while the group is in cache, more a pass of padding); from <see cref="PanelMinTokens"/> the packed int16 panels.
    /// Against 64 expert matrices of Q8_0 from memory (one thread, Zen 4, <c>bench experts Q8_0 N</c>, GMAC/s, against
    /// panels from sixteen tokens and the four-token kernel below): 6 tokens 55.8 (40.1), 10 52.3 (43.9), 12 61.9
    /// (46.5), 24 67.4 (58.2), 48 68.0 (67.2), 64 66.9 (68.8), 128 67.2 (74.3).</summary>
    private static bool UseShorts(int n) => !AvxVnni.IsSupported && Avx512BW.IsSupported && n >= ByteTiles.TokensPerPass && n < PanelMinTokens;

    /// <summary>Whether <paramref name="n"/> tokens take int16 panels packed from the tiles (<see cref="TilePanels{TBlock, TTile}"/>):
    /// a prompt or large batch where the CPU has AVX-512 but no VNNI (see <see cref="UseShorts"/>).</summary>
    private static bool UsePanels(int n) => !AvxVnni.IsSupported && Avx512BW.IsSupported && n >= PanelMinTokens;

    private const int PanelMinTokens = 64;

    /// <summary>Whether <paramref name="n"/> tokens take the four-token kernel on groups unpacked into byte tiles
    /// (<see cref="ByteGroups"/>) rather than on the stored tiles: AVX2 without VNNI, for a format whose unpacked codes
    /// are small enough to add up in int16 (<see cref="ByteTiles.InShorts{TCodes}"/>: Q5_0), where a group's unpacking
    /// then serves every token of a chunk instead of four.</summary>
    private static bool UseUnpacked(int n) =>
        !AvxVnni.IsSupported && !Avx512BW.IsSupported && ByteTiles.InShorts<TBytes>() && n >= UnpackedMinTokens;

    private const int UnpackedMinTokens = 8;

    private protected override QuantizedActivations? Prepare(ReadOnlySpan<float> x, int n, QuantizedActivations target)
    {
        QuantizedActivations a = base.Prepare(x, n, target)!;
        if (n > 2 && AvxVnni.IsSupported) a.Pad(n, BlockGemm<TBlock>.TokenPadding); // MultiplyBytes runs whole passes of four tokens
        else if (UseShorts(n) || UsePanels(n)) a.Widen(n, ByteTiles.TokenPadding); // the panels' padding is the same five tokens
        return a;
    }

    /// <summary>The groups of rows [<paramref name="g0"/>, <paramref name="g1"/>) (multiples of sixteen) as
    /// consecutive byte tiles; <paramref name="stream"/>: they are read from memory as they are multiplied.</summary>
    private protected abstract byte* ByteGroups(int g0, int g1, out bool stream);

    /// <summary>One or two tokens, or too few for the many-token kernels: every group of the rows in turn
    /// (<see cref="OneByOne"/>). A prompt or large batch without VNNI: int16 panels packed from the tiles
    /// (<see cref="UsePanels"/>). Otherwise up to 256 KB of groups at a time, against tokens in chunks of about 192 KB
    /// of codes, so both stay in L2 — with AVX-VNNI byte tiles (<see cref="BlockGemm{T}.MultiplyBytes"/>), else the
    /// stored tiles widened as they are multiplied (<see cref="ByteTiles.Multiply{TCodes}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private protected override void DotRows(QuantizedActivations? act, float* x, float* y, int n, int r0, int r1, int rowStart, int rowCount)
    {
        QuantizedActivations a = act!;
        int blocks = Cols / 32;
        int first = r0 / TileRows * TileRows;
        if (UsePanels(n))
        {
            // A group the rows start inside of takes the one-token kernel; the panels start at a whole group.
            int whole = Math.Min(r1, (r0 + TileRows - 1) / TileRows * TileRows);
            if (whole > r0) OneByOne(a, y, 0, n, r0, whole, rowStart, rowCount);
            if (whole < r1) Panels<TilePanels<TBlock, TTile>>(a, y, n, whole, r1, rowStart, rowCount);
            return;
        }
        bool shorts = UseShorts(n), unpacked = UseUnpacked(n);
        if (!shorts && !unpacked && (n <= 2 || !AvxVnni.IsSupported))
        {
            OneByOne(a, y, 0, n, r0, r1, rowStart, rowCount);
            return;
        }
        // One or two tokens past the last whole pass of six take the one-token kernel on each group after its passes.
        int nf = shorts && n % ByteTiles.TokensPerPass <= 2 ? n / ByteTiles.TokensPerPass * ByteTiles.TokensPerPass : n;
        Span<float> partials = GemmScratch.Partials;
        long byteGroup = shorts ? GroupBytes : ByteGroupBytes;
        int chunk = shorts ? Math.Max(6, (192 << 10) / (Cols * 2) / 6 * 6) : Math.Max(4, (192 << 10) / Cols / 4 * 4);
        int groupsAtOnce = (int)Math.Max(1, (256 << 10) / byteGroup);
        for (int g0 = first; g0 < r1; g0 += groupsAtOnce * TileRows)
        {
            int g1 = Math.Min(r1, g0 + groupsAtOnce * TileRows);
            bool stream = true;
            byte* tiles = shorts ? Group(g0) : ByteGroups(g0, g1, out stream);
            for (int t0 = 0; t0 < nf; t0 += chunk)
            {
                int tn = Math.Min(chunk, nf - t0);
                for (int g = g0; g < g1; g += TileRows)
                {
                    int lo = Math.Max(r0, g) - g, hi = Math.Min(r1, g + TileRows) - g;
                    float* yg = y + (long)t0 * rowCount + (g + lo - rowStart);
                    byte* group = tiles + (g - g0) / TileRows * byteGroup;
                    // The first chunk of tokens streams the stored tiles; later chunks find them in L2.
                    bool prefetch = stream && t0 == 0;
                    if (lo == 0) Multiply(a, group, blocks, hi, t0, tn, partials, yg, rowCount, shorts, unpacked, prefetch);
                    else
                    {
                        // A group the rows start inside of (a product over a row range that is not a multiple of sixteen).
                        fixed (float* e = GemmScratch.Edge(tn * TileRows))
                        {
                            Multiply(a, group, blocks, hi, t0, tn, partials, e, TileRows, shorts, unpacked, prefetch);
                            for (int t = 0; t < tn; t++) Store(e + t * TileRows, yg + (long)t * rowCount, lo, hi);
                        }
                    }
                    if (t0 + tn == nf && nf < n) OneByOne(a, y, nf, n, g + lo, g + hi, rowStart, rowCount);
                }
            }
        }
    }

    /// <summary>Tokens [t0, t0 + n) against one group: <see cref="ByteTiles.Multiply{TCodes}"/> on the stored tiles, or
    /// <see cref="BlockGemm{T}.MultiplyBytes"/> on byte tiles; <paramref name="prefetch"/>: the tiles come from memory,
    /// so the kernel prefetches ahead of its reads.</summary>
    private void Multiply(QuantizedActivations a, byte* group, int blocks, int rows, int t0, int n, Span<float> partials, float* y, long yStride,
        bool shorts, bool unpacked, bool prefetch)
    {
        int cols = blocks * 32;
        if (unpacked)
        {
            // Four tokens at a time, then one, as OneByOne takes them; the group's sixteen rows from rows.
            float* lanes = stackalloc float[4 * TileRows];
            int t = t0;
            for (; t + 4 <= t0 + n; t += 4)
            {
                ByteTiles.Four<TBytes>(group, blocks, a, t, lanes);
                for (int k = 0; k < 4; k++) Store(lanes + k * TileRows, y + (t - t0 + k) * yStride, 0, rows);
            }
            for (; t < t0 + n; t++)
            {
                ByteTiles.One<TBytes>(group, blocks, a, t, lanes);
                Store(lanes, y + (t - t0) * yStride, 0, rows);
            }
            return;
        }
        if (shorts)
        {
            fixed (short* q = a.Q16) fixed (float* d = a.D, p = partials) fixed (short* s = a.BlockSum)
                ByteTiles.Multiply<TTile>(group, blocks, rows, q + (long)t0 * cols, d + (long)t0 * blocks, s + (long)t0 * blocks, n, p, y, yStride, prefetch);
            return;
        }
        BlockGemm<TBlock>.MultiplyBytes(group, blocks, rows, a.Q.AsSpan(t0 * cols), a.D.AsSpan(t0 * blocks), a.BlockSum.AsSpan(t0 * blocks),
            n, partials, y, yStride, prefetch);
    }

    /// <summary>Tokens [<paramref name="t0"/>, <paramref name="n"/>) over each group of rows while it is in L1/L2, one
    /// at a time (in cache, AVX-VNNI, the one-token kernel twice, 83 GMAC/s a thread, beats a pass of four with two of
    /// padding, 69) or, without VNNI, four at a time (<see cref="ByteTiles.Four{TCodes}"/>) and the rest one at a time:
    /// every count short of the many-token kernels, and the tokens left over after their passes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void OneByOne(QuantizedActivations a, float* y, int t0, int n, int r0, int r1, int rowStart, int rowCount)
    {
        int blocks = Cols / 32;
        float* lanes = stackalloc float[4 * TileRows];
        // Two or more passes of four tokens over a group: the first prefetches its tiles and converts its scales once.
        float* scales = !AvxVnni.IsSupported && n - t0 >= 8 ? GemmScratch.TileScales(blocks * TileRows) : null;
        for (int g = r0 / TileRows * TileRows; g < r1; g += TileRows)
        {
            int lo = Math.Max(r0, g) - g, hi = Math.Min(r1, g + TileRows) - g, t = t0;
            if (!AvxVnni.IsSupported)
                for (; t + 4 <= n; t += 4)
                {
                    ByteTiles.Four<TTile>(Group(g), blocks, a, t, lanes, scales, first: t == t0);
                    for (int k = 0; k < 4; k++) Store(lanes + k * TileRows, y + (long)(t + k) * rowCount + (g + lo - rowStart), lo, hi);
                }
            for (; t < n; t++)
            {
                float* yt = y + (long)t * rowCount + (g + lo - rowStart);
                if (lo == 0 && hi == TileRows) ByteTiles.One<TTile>(Group(g), blocks, a, t, yt);
                else
                {
                    ByteTiles.One<TTile>(Group(g), blocks, a, t, lanes);
                    Store(lanes, yt, lo, hi);
                }
            }
        }
    }
}

/// <summary>Q8_0 in <see cref="ByteTiles"/> (<see cref="Q8Tiles"/>): the stored tiles are what
/// <see cref="BlockGemm{T}.MultiplyBytes"/> reads, which the file layout has to pack first.</summary>
internal sealed unsafe class Q8TiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : ByteTiledMatrix<Q8_0Codes, Q8Tiles.Codes, Q8Tiles.Codes>(WeightFormat.Q8_0, rows, cols, data, owner)
{
    public static Q8TiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, cols);
        return new Q8TiledMatrix(rows, cols, buffer.Pointer, buffer);
    }

    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) =>
        Q8Tiles.SetRow(MemoryMarshal.Cast<byte, BlockQ8_0>(stored), group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) =>
        Q8Tiles.GetRow(group, r, MemoryMarshal.Cast<byte, BlockQ8_0>(stored));

    private protected override byte* ByteGroups(int g0, int g1, out bool stream)
    {
        stream = true;
        return Group(g0);
    }
}

/// <summary>Q4_0 and Q5_0 in their nibble tiles (<see cref="Q4Tiles"/>, <see cref="Q5Tiles"/>); several tokens multiply a
/// few groups at a time unpacked into byte tiles.</summary>
internal abstract unsafe class NibbleTiledMatrix<TBlock, TTile, TBytes>(WeightFormat format, int rows, int cols, byte* data, IDisposable? owner)
    : ByteTiledMatrix<TBlock, TTile, TBytes>(format, rows, cols, data, owner)
    where TBlock : struct, IBlockCodes where TTile : struct, IByteTileCodes, ITileRows where TBytes : struct, IByteTileCodes
{
    private protected override void SetStoredRow(ReadOnlySpan<byte> stored, byte* group, int r) => TTile.SetRow(stored, group, r);

    private protected override void GetStoredRow(byte* group, int r, Span<byte> stored) => TTile.GetRow(group, r, stored);

    private protected override byte* ByteGroups(int g0, int g1, out bool stream)
    {
        int groups = (g1 - g0 + TileRows - 1) / TileRows;
        byte* tiles = GemmScratch.Unpacked(checked((int)(groups * ByteGroupBytes)));
        for (int i = 0; i < groups; i++) ByteTiles.Unpack<TTile>(Group(g0 + i * TileRows), Cols / 32, tiles + i * ByteGroupBytes);
        stream = false;
        return tiles;
    }
}

/// <summary>Q5_0 in <see cref="Q5Tiles"/>.</summary>
internal sealed unsafe class Q5TiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : NibbleTiledMatrix<Q5_0Codes, Q5Tiles.Codes, ByteTiles.Unpacked<Q5Tiles.Codes>>(WeightFormat.Q5_0, rows, cols, data, owner)
{
    public static Q5TiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, cols);
        return new Q5TiledMatrix(rows, cols, buffer.Pointer, buffer);
    }
}

/// <summary>Q4_0 in <see cref="Q4Tiles"/>.</summary>
internal sealed unsafe class Q4TiledMatrix(int rows, int cols, byte* data, IDisposable? owner)
    : NibbleTiledMatrix<Q4_0Codes, Q4Tiles.Codes, ByteTiles.Unpacked<Q4Tiles.Codes>>(WeightFormat.Q4_0, rows, cols, data, owner)
{
    public static Q4TiledMatrix Create(int rows, int cols)
    {
        NativeBuffer buffer = Allocate(rows, cols);
        return new Q4TiledMatrix(rows, cols, buffer.Pointer, buffer);
    }
}
