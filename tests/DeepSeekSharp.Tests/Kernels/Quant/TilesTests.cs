using DeepSeekSharp.Linear;
using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Quant;

/// <summary>Q2_K–Q6_K, Q8_0, Q5_0 and Q4_0 kept as sixteen interleaved rows (<see cref="Q4KTiles"/>, <see cref="Q5KTiles"/>, <see cref="Q6KTiles"/>,
/// <see cref="LowBitKTiles"/>, <see cref="Q8Tiles"/>, <see cref="Q5Tiles"/>, <see cref="Q4Tiles"/>: the in-memory layouts on AVX2 CPUs) must hold exactly the GGUF blocks they
/// were given and compute exactly what the file-layout kernels compute.</summary>
public unsafe class TilesTests
{
    private static bool Tiled(WeightFormat format) => format switch
    {
        WeightFormat.Q4_K => Q4KTiles.IsSupported,
        WeightFormat.Q5_K => Q5KTiles.IsSupported,
        WeightFormat.Q6_K => Q6KTiles.IsSupported,
        WeightFormat.Q2_K or WeightFormat.Q3_K => LowBitKTiles.IsSupported,
        WeightFormat.Q8_0 => Q8Tiles.IsSupported,
        WeightFormat.Q5_0 => Q5Tiles.IsSupported,
        WeightFormat.Q4_0 => Q4Tiles.IsSupported,
        _ => false,
    };

    private static float[] Random(Random rng, int n, float scale = 1f) =>
        Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    /// <summary>Sixteen rows of <paramref name="blocks"/> random blocks (every bit pattern) written into one tile group
    /// of <paramref name="groupBytes"/> and read back must be the same bytes; returns the group's size.</summary>
    private static long AssertGroupHoldsRowsExactly<T>(int blocks, long groupBytes, int seed,
        delegate*<ReadOnlySpan<T>, byte*, int, void> setRow, delegate*<byte*, int, Span<T>, void> getRow) where T : unmanaged
    {
        var rng = new Random(seed);
        var rows = new T[16 * blocks];
        rng.NextBytes(MemoryMarshal.AsBytes(rows.AsSpan()));
        var tiles = new byte[groupBytes];
        var back = new T[blocks];
        fixed (byte* group = tiles)
        {
            for (int r = 0; r < 16; r++) setRow(rows.AsSpan(r * blocks, blocks), group, r);
            for (int r = 0; r < 16; r++)
            {
                getRow(group, r, back);
                Assert.Equal(MemoryMarshal.AsBytes(rows.AsSpan(r * blocks, blocks)).ToArray(), MemoryMarshal.AsBytes(back.AsSpan()).ToArray());
            }
        }
        return tiles.Length;
    }

    [Fact]
    public void Q4KTiles_HoldTheGgufBlocksExactly() => // random bytes: every pattern of the 6-bit scale packing too
        AssertGroupHoldsRowsExactly<BlockQ4K>(3, Q4KTiledMatrix.BytesFor(16, 3 * 256), 5, &Q4KTiles.SetRow, &Q4KTiles.GetRow);

    [Fact]
    public void Q5KTiles_HoldTheGgufBlocksExactly() => // random bytes: every code and fifth bit, every scale packing
        AssertGroupHoldsRowsExactly<BlockQ5K>(3, Q5KTiledMatrix.BytesFor(16, 3 * 256), 7, &Q5KTiles.SetRow, &Q5KTiles.GetRow);

    [Fact]
    public void Q2KTiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every pattern of codes, packed scales and minimums, d and dmin.
        long bytes = AssertGroupHoldsRowsExactly<byte>(3 * LowBitKQuants.Q2KBytes, LowBitKTiledMatrix<Q2KTileLayout>.BytesFor(16, 3 * 256), 11,
            &LowBitKTiles.SetRow<Q2KTileLayout>, &LowBitKTiles.GetRow<Q2KTileLayout>);
        Assert.Equal(16 * 3 * LowBitKQuants.Q2KBytes, bytes); // every byte GGUF stores and nothing else
    }

    [Fact]
    public void Q3KTiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every pattern of low bits, high-mask bits and the 6-bit scale packing, and d.
        long bytes = AssertGroupHoldsRowsExactly<byte>(3 * LowBitKQuants.Q3KBytes, LowBitKTiledMatrix<Q3KTileLayout>.BytesFor(16, 3 * 256), 12,
            &LowBitKTiles.SetRow<Q3KTileLayout>, &LowBitKTiles.GetRow<Q3KTileLayout>);
        Assert.Equal(128 + 3 * 16 * (LowBitKQuants.Q3KBytes - 2 + 4), bytes); // the d in two lines, scales widened to bytes
    }

    [Fact]
    public void Q6KTiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every pattern of codes, top bits, scales and d.
        long bytes = AssertGroupHoldsRowsExactly<BlockQ6K>(2, Q6KTiledMatrix.BytesFor(16, 2 * 256), 6, &Q6KTiles.SetRow, &Q6KTiles.GetRow);
        Assert.Equal(16 * 2 * BlockQ6K.Bytes, bytes); // every byte GGUF stores and nothing else (an even count of super-blocks)
    }

    [Fact]
    public void Q8Tiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every code, -128 included, and every scale pattern.
        long bytes = AssertGroupHoldsRowsExactly<BlockQ8_0>(3, Q8TiledMatrix.BytesFor(16, 3 * 32), 8, &Q8Tiles.SetRow, &Q8Tiles.GetRow);
        Assert.Equal(16 * 3 * BlockQ8_0.Bytes, bytes); // every byte GGUF stores and nothing else
    }

    [Fact]
    public void Q5Tiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every code and fifth bit; rows r and r + 8 share bytes, so writing all sixteen before reading
        // any back also checks that no row overwrites another's bits.
        long bytes = AssertGroupHoldsRowsExactly<byte>(3 * Q5Tiles.BlockBytes, Q5TiledMatrix.BytesFor(16, 3 * 32), 5, &Q5Tiles.SetRow, &Q5Tiles.GetRow);
        Assert.Equal(16 * 3 * Q5Tiles.BlockBytes, bytes); // every byte GGUF stores and nothing else
    }

    [Fact]
    public void Q4Tiles_HoldTheGgufBlocksExactly()
    {
        // Random bytes: every code; rows r and r + 8 share the nibble bytes.
        long bytes = AssertGroupHoldsRowsExactly<byte>(3 * Q4Tiles.BlockBytes, Q4TiledMatrix.BytesFor(16, 3 * 32), 4, &Q4Tiles.SetRow, &Q4Tiles.GetRow);
        Assert.Equal(16 * 3 * Q4Tiles.BlockBytes, bytes); // every byte GGUF stores and nothing else
    }

    [Fact]
    public void Q8TiledProducts_OfRawCodes_EqualTheFileLayoutKernels_BitForBit()
    {
        // Codes straight from bytes reach -128, which no quantiser here writes; the sums must stay exact.
        if (!Q8Tiles.IsSupported) return;
        const int rows = 19, blocks = 11, cols = blocks * 32;
        var rng = new Random(12);
        var raw = new BlockQ8_0[rows * blocks];
        rng.NextBytes(MemoryMarshal.AsBytes(raw.AsSpan()));
        for (int i = 0; i < raw.Length; i++)
        {
            raw[i].D = HalfTable.FromFloat((float)(rng.NextDouble() * 0.02));
            if (i % 5 == 0) raw[i].Qs[i % 32] = -128;
        }
        byte[] bytes = MemoryMarshal.AsBytes(raw.AsSpan()).ToArray();
        using Matrix file = Matrix.Create(WeightFormat.Q8_0, rows, cols, tiles: false);
        using Matrix tiled = Matrix.Create(WeightFormat.Q8_0, rows, cols);
        file.ReadStoredRows(0, rows, span => bytes.CopyTo(span));
        tiled.ReadStoredRows(0, rows, span => bytes.CopyTo(span));
        foreach (int n in new[] { 1, 3, 6, 7, 9, 17, 64 }) // one token, a few one by one; the many-token kernels (without VNNI: six to 63 straight from the tiles, one or two left over one by one; 64 on packed panels)
        {
            float[] x = Random(rng, n * cols, 2f);
            var expected = new float[n * rows];
            var actual = new float[n * rows];
            file.Forward(x, expected, n);
            tiled.Forward(x, actual, n);
            Assert.Equal(Bits(expected), Bits(actual));
        }
    }

    public static TheoryData<WeightFormat, int, int, int> Shapes => new()
    {
        // rows (whole tiles, a partial one, less than one), columns, tokens (passes of four and single ones)
        { WeightFormat.Q4_K, 16, 256, 1 },
        { WeightFormat.Q4_K, 37, 768, 7 },
        { WeightFormat.Q4_K, 5, 512, 4 },
        { WeightFormat.Q4_K, 70, 2048, 13 },
        { WeightFormat.Q4_K, 33, 256, 130 }, // token chunks (192 KB of codes) do not divide the tokens
        { WeightFormat.Q5_K, 16, 256, 1 },
        { WeightFormat.Q5_K, 37, 768, 7 },
        { WeightFormat.Q5_K, 5, 512, 4 },
        { WeightFormat.Q5_K, 70, 2048, 13 },
        { WeightFormat.Q5_K, 33, 256, 130 },
        { WeightFormat.Q6_K, 16, 256, 1 },
        { WeightFormat.Q6_K, 37, 768, 7 },
        { WeightFormat.Q6_K, 5, 512, 4 },
        { WeightFormat.Q6_K, 70, 2816, 13 }, // the shared experts' down projection of a Q4_K_M file: 11 super-blocks
        { WeightFormat.Q6_K, 33, 256, 130 },
        { WeightFormat.Q2_K, 16, 256, 1 },
        { WeightFormat.Q2_K, 37, 768, 7 },
        { WeightFormat.Q2_K, 5, 512, 4 },
        { WeightFormat.Q2_K, 70, 2048, 13 },
        { WeightFormat.Q2_K, 33, 256, 130 },
        { WeightFormat.Q3_K, 16, 256, 1 },
        { WeightFormat.Q3_K, 37, 768, 7 },
        { WeightFormat.Q3_K, 5, 512, 4 },
        { WeightFormat.Q3_K, 70, 2048, 13 },
        { WeightFormat.Q3_K, 33, 256, 130 },
        // Q8_0: blocks fewer than eight (only the one-by-one tail), eight and one, five eights and four (1408 columns,
        // an expert's down projection), two and three tokens (verify passes run four with padding)
        { WeightFormat.Q8_0, 16, 32, 1 },
        { WeightFormat.Q8_0, 37, 96, 7 },
        { WeightFormat.Q8_0, 5, 288, 4 },
        { WeightFormat.Q8_0, 70, 1408, 13 },
        { WeightFormat.Q8_0, 21, 2048, 2 },
        { WeightFormat.Q8_0, 40, 352, 3 },
        { WeightFormat.Q8_0, 33, 256, 130 },
        { WeightFormat.Q8_0, 18, 2080, 6 },  // eight eights and one block, one pass of six
        { WeightFormat.Q8_0, 37, 8192, 40 }, // token chunks of twelve (192 KB of int16 codes) and a short last pass
        { WeightFormat.Q8_0, 70, 1408, 8 },  // a pass of six and two tokens left over for the one-token kernel
        // Q5_0 as Q8_0, and groups unpacked several at a time (seven of 2048 columns in 256 KB)
        { WeightFormat.Q5_0, 16, 32, 1 },
        { WeightFormat.Q5_0, 37, 96, 7 },
        { WeightFormat.Q5_0, 5, 288, 4 },
        { WeightFormat.Q5_0, 70, 1408, 13 },
        { WeightFormat.Q5_0, 21, 2048, 2 },
        { WeightFormat.Q5_0, 40, 352, 3 },
        { WeightFormat.Q5_0, 33, 256, 130 },
        { WeightFormat.Q5_0, 150, 2048, 5 },
        { WeightFormat.Q5_0, 20, 1408, 6 },
        { WeightFormat.Q5_0, 37, 8192, 40 },
        { WeightFormat.Q5_0, 21, 2080, 14 },
        // Q4_0 as Q5_0
        { WeightFormat.Q4_0, 16, 32, 1 },
        { WeightFormat.Q4_0, 37, 96, 7 },
        { WeightFormat.Q4_0, 5, 288, 4 },
        { WeightFormat.Q4_0, 70, 1408, 13 },
        { WeightFormat.Q4_0, 21, 2048, 2 },
        { WeightFormat.Q4_0, 33, 256, 130 },
        { WeightFormat.Q4_0, 150, 2048, 5 },
        { WeightFormat.Q4_0, 20, 1408, 6 },
        { WeightFormat.Q4_0, 37, 8192, 40 },
        { WeightFormat.Q4_0, 21, 2080, 14 },
    };

    /// <summary>Q5_0's (and Q4_0's) largest codes against the largest activations of either sign: where four column
    /// groups' pair sums add up in int16 before they are widened (AVX2 without VNNI), each int16 lane holds eight
    /// products of 31 · 127, a few hundred short of overflowing. Every row all 31s or all 0s, the activations ±2 a block of 32 (codes
    /// ±127), so the bound is reached in both directions.</summary>
    [Theory]
    [InlineData(WeightFormat.Q5_0)]
    [InlineData(WeightFormat.Q4_0)] // codes 15 or 0 (−8 · d)
    public void NibbleTiledProducts_OfTheLargestCodes_EqualTheFileLayoutKernels_BitForBit(WeightFormat format)
    {
        if (!Tiled(format)) return;
        const int rows = 19, blocks = 11, cols = blocks * 32;
        int blockBytes = format == WeightFormat.Q5_0 ? Q5Tiles.BlockBytes : Q4Tiles.BlockBytes;
        var rng = new Random(3);
        var bytes = new byte[rows * blocks * blockBytes];
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocks; b++)
            {
                Span<byte> blk = bytes.AsSpan((r * blocks + b) * blockBytes, blockBytes);
                BitConverter.TryWriteBytes(blk, HalfTable.FromFloat((float)(0.001 + rng.NextDouble() * 0.02)));
                blk[2..].Fill(r % 3 == 2 ? (byte)0 : (byte)0xFF); // fifth bits and nibbles: codes 31, or 0 (−16 · d)
            }
        using Matrix file = Matrix.Create(format, rows, cols, tiles: false);
        using Matrix tiled = Matrix.Create(format, rows, cols);
        AssertStoredRowsMultiplyAlike(file, tiled, bytes, [1, 4, 6, 9], run: 32); // one token; four at once; the many-token kernels
    }

    /// <summary>Q5_K's largest codes (every nibble and fifth bit set) against activation codes of ±127: each int16
    /// lane of the tile kernels holds eight products of 31 · 127 before it is widened, near the bound in both signs.</summary>
    [Fact]
    public void Q5KTiledProducts_OfTheLargestCodes_EqualTheFileLayoutKernels_BitForBit()
    {
        if (!Q5KTiles.IsSupported) return;
        const int rows = 19, superBlocks = 3, cols = superBlocks * 256;
        var rng = new Random(4);
        var bytes = new byte[rows * superBlocks * BlockQ5K.Bytes];
        rng.NextBytes(bytes);
        for (int blk = 0; blk < rows * superBlocks; blk++)
        {
            Span<byte> b = bytes.AsSpan(blk * BlockQ5K.Bytes, BlockQ5K.Bytes);
            BitConverter.TryWriteBytes(b, HalfTable.FromFloat((float)(0.001 + rng.NextDouble() * 0.02)));
            BitConverter.TryWriteBytes(b[2..], HalfTable.FromFloat((float)(rng.NextDouble() * 0.01)));
            b[16..].Fill(blk % 3 == 2 ? (byte)0 : (byte)0xFF); // codes 31, or 0
        }
        using Matrix file = Matrix.Create(WeightFormat.Q5_K, rows, cols, tiles: false);
        using Matrix tiled = Matrix.Create(WeightFormat.Q5_K, rows, cols);
        AssertStoredRowsMultiplyAlike(file, tiled, bytes, [1, 4, 5], run: 32); // one token; four at once; four and one
    }

    /// <summary>Q2_K's and Q3_K's largest codes (3, and 7 or 0 for Q3_K's − 4) against activation codes of ±127: the
    /// tile kernels add a sub-block's sixteen products in int16 before the scale widens them.</summary>
    [Theory]
    [InlineData(WeightFormat.Q2_K)]
    [InlineData(WeightFormat.Q3_K)]
    public void LowBitTiledProducts_OfTheLargestCodes_EqualTheFileLayoutKernels_BitForBit(WeightFormat format)
    {
        if (!LowBitKTiles.IsSupported) return;
        const int rows = 19, superBlocks = 3, cols = superBlocks * 256;
        bool q2 = format == WeightFormat.Q2_K;
        int blockBytes = q2 ? LowBitKQuants.Q2KBytes : LowBitKQuants.Q3KBytes;
        var rng = new Random(8);
        var bytes = new byte[rows * superBlocks * blockBytes];
        rng.NextBytes(bytes); // scales and minimums of every pattern
        for (int blk = 0; blk < rows * superBlocks; blk++)
        {
            Span<byte> b = bytes.AsSpan(blk * blockBytes, blockBytes);
            byte codes = blk % 3 == 2 ? (byte)0 : (byte)0xFF; // Q2_K: 0 or 3; Q3_K: −4 or 3 (every low and high bit)
            if (q2)
            {
                b.Slice(16, 64).Fill(codes);
                BitConverter.TryWriteBytes(b[80..], HalfTable.FromFloat((float)(0.001 + rng.NextDouble() * 0.02)));
                BitConverter.TryWriteBytes(b[82..], HalfTable.FromFloat((float)(rng.NextDouble() * 0.01)));
            }
            else
            {
                b[..96].Fill(codes);
                BitConverter.TryWriteBytes(b[108..], HalfTable.FromFloat((float)(0.001 + rng.NextDouble() * 0.02)));
            }
        }
        using Matrix file = Matrix.Create(format, rows, cols, tiles: false);
        using Matrix tiled = Matrix.Create(format, rows, cols);
        Assert.NotEqual(file.GetType(), tiled.GetType());
        AssertStoredRowsMultiplyAlike(file, tiled, bytes, [1, 4, 5], run: 64);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void TiledProducts_EqualTheFileLayoutKernels_BitForBit(WeightFormat format, int rows, int cols, int n)
    {
        if (!Tiled(format)) return;
        var rng = new Random(rows * 13 + cols * 5 + n);
        float[] w = Random(rng, rows * cols);
        using Matrix tiled = Matrix.FromValues(rows, cols, w, format);
        using Matrix file = Matrix.FromValues(rows, cols, w, format, tiles: false);
        Assert.NotEqual(tiled.GetType(), file.GetType());
        float[] x = Random(rng, n * cols, 3f);
        x[7] = 0;
        x[x.Length - 2] = 60f;
        var expected = new float[n * rows];
        var actual = new float[n * rows];
        var one = new float[rows];
        file.Forward(x, expected, n);
        tiled.Forward(x, actual, n);
        Assert.Equal(Bits(expected), Bits(actual));
        for (int t = 0; t < n; t++)
        {
            tiled.Forward(x.AsSpan(t * cols, cols), one, 1);
            Assert.Equal(Bits(expected.AsSpan(t * rows, rows)), Bits(one));
        }
        // A row range starting inside a tile, and two threads.
        int start = Math.Min(3, rows - 1), count = rows - start;
        var part = new float[n * count];
        using (var pool = new WorkerPool(2))
        using (WorkerPool.Use(pool)) tiled.Forward(x, part, n, start, count);
        for (int t = 0; t < n; t++) Assert.Equal(Bits(expected.AsSpan(t * rows + start, count)), Bits(part.AsSpan(t * count, count)));
    }

    [Theory]
    [InlineData(WeightFormat.Q4_K, 21, 12)]
    [InlineData(WeightFormat.Q5_K, 21, 12)]
    [InlineData(WeightFormat.Q6_K, 21, 12)]
    [InlineData(WeightFormat.Q2_K, 21, 12)]
    [InlineData(WeightFormat.Q3_K, 21, 12)]
    [InlineData(WeightFormat.Q8_0, 21, 12)]
    [InlineData(WeightFormat.Q5_0, 21, 12)]
    [InlineData(WeightFormat.Q5_0, 300, 7)] // several tasks, the second read starting inside a group
    [InlineData(WeightFormat.Q4_0, 21, 12)]
    [InlineData(WeightFormat.Q4_0, 300, 7)]
    public void RowsReadFromFileBytes_DequantiseAsTheFileLayoutDoes(WeightFormat format, int rows, int split)
    {
        var rng = new Random(9);
        const int cols = 512;
        using Matrix file = Matrix.FromValues(rows, cols, Random(rng, rows * cols), format, tiles: false);
        using Matrix tiled = Matrix.Create(format, rows, cols);
        tiled.ReadStoredRows(0, split, span => { for (int r = 0; r < split; r++) file.RawRow(r).CopyTo(span[(r * (int)file.RowBytes)..]); });
        tiled.ReadStoredRows(split, rows - split, span => { for (int r = split; r < rows; r++) file.RawRow(r).CopyTo(span[((r - split) * (int)file.RowBytes)..]); });
        var a = new float[cols];
        var b = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            file.DequantizeRow(r, a);
            tiled.DequantizeRow(r, b);
            Assert.Equal(a, b);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => tiled.ReadStoredRows(rows - 1, 2, _ => { }));
        if (Tiled(format)) Assert.Throws<NotSupportedException>(() => tiled.RawRow(0).Length); // else the file layout
    }

    /// <summary>The same stored rows (<paramref name="bytes"/>, GGUF blocks) in the file layout and in tiles multiply each
    /// count of <paramref name="tokens"/> to the same bits, against activations of ±2 alternating in runs of
    /// <paramref name="run"/> columns (so codes of ±127, of both signs within a super-block).</summary>
    private static void AssertStoredRowsMultiplyAlike(Matrix file, Matrix tiled, byte[] bytes, int[] tokens, int run)
    {
        int rows = file.Rows, cols = file.Cols;
        file.ReadStoredRows(0, rows, span => bytes.CopyTo(span));
        tiled.ReadStoredRows(0, rows, span => bytes.CopyTo(span));
        foreach (int n in tokens)
        {
            var x = new float[n * cols];
            for (int i = 0; i < x.Length; i++) x[i] = (i / run + i / cols) % 2 == 0 ? 2f : -2f;
            var expected = new float[n * rows];
            var actual = new float[n * rows];
            file.Forward(x, expected, n);
            tiled.Forward(x, actual, n);
            Assert.Equal(Bits(expected), Bits(actual));
        }
    }

    private static int[] Bits(ReadOnlySpan<float> v)
    {
        var bits = new int[v.Length];
        for (int i = 0; i < v.Length; i++) bits[i] = BitConverter.SingleToInt32Bits(v[i]);
        return bits;
    }
}
