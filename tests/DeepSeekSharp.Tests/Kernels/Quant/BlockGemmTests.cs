using DeepSeekSharp.Linear;
using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Quant;

/// <summary>The panel kernel used for many tokens must give every token exactly what the one-token kernel gives
/// (so prefill, batched decode and decode agree to the bit) and the format's scalar specification within float
/// rounding.</summary>
public class BlockGemmTests
{
    private static float[] Random(Random rng, int n, float scale = 1f) =>
        Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    public static TheoryData<WeightFormat, int, int, int> Shapes => new()
    {
        // format, rows (whole and partial panels), blocks (below, at and past whole eights), tokens (passes of four and a short one)
        { WeightFormat.Q8_0, 16, 8, 8 },
        { WeightFormat.Q8_0, 37, 13, 11 },
        { WeightFormat.Q8_0, 5, 3, 9 },
        { WeightFormat.Q8_0, 70, 64, 21 },
        { WeightFormat.Q8_0, 70, 64, 100 }, // tokens in chunks of 48 over groups of four panels
        { WeightFormat.Q4_0, 37, 13, 10 },
        { WeightFormat.Q5_0, 37, 19, 12 },
        { WeightFormat.IQ4_NL, 37, 44, 12 },
        { WeightFormat.Q4_K, 37, 24, 29 },  // three super-blocks
        { WeightFormat.Q4_K, 20, 64, 100 }, // chunks of 48 tokens over groups of three panels
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ManyTokens_GiveEachTokenTheOneTokenResult_BitForBit(WeightFormat format, int rows, int blocks, int n)
    {
        Assert.True(n >= (format == WeightFormat.Q4_K ? 24 : 8), "the shapes must reach the panel kernel");
        var rng = new Random(rows * 31 + blocks * 7 + n);
        int cols = blocks * 32;
        using Matrix m = Matrix.FromValues(rows, cols, Random(rng, rows * cols), format, tiles: false); // the file layout and its panels (KQuantTilesTests: tiles)
        float[] x = Random(rng, n * cols, 3f);
        x[5] = 0; // a zero and a large value in the activations
        x[cols + 2] = 40f;
        var many = new float[n * rows];
        m.Forward(x, many, n);
        var one = new float[rows];
        for (int t = 0; t < n; t++)
        {
            m.Forward(x.AsSpan(t * cols, cols), one, 1);
            for (int o = 0; o < rows; o++)
                Assert.True(BitConverter.SingleToInt32Bits(one[o]) == BitConverter.SingleToInt32Bits(many[t * rows + o]),
                    $"token {t} row {o}: {many[t * rows + o]:R} != {one[o]:R}");
        }
        for (int t = 0; t < n; t++)
        for (int o = 0; o < rows; o++)
        {
            double exact = Reference(m, o, x.AsSpan(t * cols, cols));
            Assert.True(Math.Abs(many[t * rows + o] - exact) <= 1e-4 * (1 + Math.Abs(exact)), $"token {t} row {o}: {many[t * rows + o]} vs {exact}");
        }
    }

    [Fact]
    public void RowRangesAndThreads_GiveTheSameBits()
    {
        var rng = new Random(3);
        int rows = 300, cols = 64 * 32, n = 12;
        using Matrix m = Matrix.FromValues(rows, cols, Random(rng, rows * cols), WeightFormat.Q8_0);
        float[] x = Random(rng, n * cols);
        var one = new float[n * rows];
        using (WorkerPool.Use(new WorkerPool(1))) m.Forward(x, one, n);
        var two = new float[n * rows];
        using (var pool = new WorkerPool(2))
        using (WorkerPool.Use(pool)) m.Forward(x, two, n);
        Assert.Equal(one, two);
        var part = new float[n * 45];
        m.Forward(x, part, n, rowStart: 101, rowCount: 45); // a range starting inside a panel of the full product
        for (int t = 0; t < n; t++)
            Assert.Equal(one.AsSpan(t * rows + 101, 45).ToArray(), part.AsSpan(t * 45, 45).ToArray());
    }

    private const int PackRows = 13, PackBlocks = 2;

    /// <summary>Code i of row r, block b in <see cref="PackedRows"/>: every value from -127 to 127 occurs.</summary>
    private static int PackCode(int r, int b, int i) => (r * 7 + b * 32 + i) % 255 - 127;

    /// <summary>13 Q8_0 rows of two blocks; row r's scale is r + 1.</summary>
    private static byte[] PackedRows()
    {
        var w = new byte[PackRows * PackBlocks * BlockQ8_0.Bytes];
        for (int r = 0; r < PackRows; r++)
        for (int b = 0; b < PackBlocks; b++)
        {
            int o = (r * PackBlocks + b) * BlockQ8_0.Bytes;
            BitConverter.TryWriteBytes(w.AsSpan(o), BitConverter.HalfToUInt16Bits((Half)(r + 1)));
            for (int i = 0; i < 32; i++) w[o + 2 + i] = (byte)(sbyte)PackCode(r, b, i);
        }
        return w;
    }

    [Fact]
    public void Pack_PutsColumnPairsOfSixteenRowsSideBySide()
    {
        if (!Avx512BW.IsSupported) return;
        byte[] w = PackedRows();
        var panel = new short[PackBlocks * 512];
        PanelPack.Codes<BlockRows<Q8_0Codes>>(ref w[0], PackBlocks * BlockQ8_0.Bytes, PackRows, PackBlocks, panel);
        for (int b = 0; b < PackBlocks; b++)
        for (int g = 0; g < 16; g++)
        for (int j = 0; j < 16; j++)
        for (int e = 0; e < 2; e++)
            Assert.Equal(j < PackRows ? PackCode(j, b, 2 * g + e) : 0, panel[((b * 16 + g) * 16 + j) * 2 + e]);
    }

    [Fact]
    public void PackBytes_PutsEachBlocksScalesThenFourColumnsOfSixteenRowsInEachGroup_WithCodesMadeUnsigned()
    {
        if (!Avx2.IsSupported) return;
        byte[] w = PackedRows();
        var tiles = new byte[PackBlocks * ByteTiles.BlockBytes];
        BlockGemm<Q8_0Codes>.PackBytes(ref w[0], PackBlocks * BlockQ8_0.Bytes, PackRows, PackBlocks, tiles);
        // tile[block]: sixteen fp16 scales, then [group of four columns, row, column in the group]
        for (int b = 0; b < PackBlocks; b++)
        {
            int tile = b * ByteTiles.BlockBytes;
            for (int j = 0; j < 16; j++)
            {
                Assert.Equal(j < PackRows ? j + 1f : 0f, (float)BitConverter.ToHalf(tiles, tile + 2 * j));
                for (int g = 0; g < 8; g++)
                for (int e = 0; e < 4; e++)
                    Assert.Equal(j < PackRows ? PackCode(j, b, 4 * g + e) + 128 : 0, tiles[tile + ByteTiles.ScaleBytes + g * 64 + j * 4 + e]);
            }
        }
    }

    [Fact]
    public void Pack_ConvertsTheSixteenRowsScales_WhereThePanelsAreInt16()
    {
        if (!BlockGemm<Q8_0Codes>.IsSupported || AvxVnni.IsSupported) return; // byte tiles keep their fp16 scales (above)
        byte[] w = PackedRows();
        var panel = new short[PackBlocks * 512];
        var scales = new float[PackBlocks * 16];
        BlockGemm<Q8_0Codes>.Pack(ref w[0], PackBlocks * BlockQ8_0.Bytes, PackRows, PackBlocks, panel, scales);
        for (int b = 0; b < PackBlocks; b++)
        for (int j = 0; j < 16; j++)
            Assert.Equal(j < PackRows ? j + 1 : 0, scales[b * 16 + j]);
    }

    /// <summary>Σ w·x in double over the dequantised row and the activations quantised as the kernels see them.</summary>
    private static double Reference(Matrix m, int row, ReadOnlySpan<float> x)
    {
        var w = new float[m.Cols];
        m.DequantizeRow(row, w);
        var act = new QuantizedActivations();
        int block = m.Format == WeightFormat.Q4_K ? 256 : 32; // per-256 activations for the k-quant kernels
        if (block == 256) act.QuantizeK(x, 1, m.Cols);
        else act.Quantize(x, 1, m.Cols);
        double sum = 0;
        for (int i = 0; i < m.Cols; i++) sum += (double)w[i] * act.Q[i] * act.D[i / block];
        return sum;
    }
}
