using DeepSeekSharp.Linear;

namespace DeepSeekSharp.Tests.Linear;

/// <summary>Every weight format gives each token the same bits whatever number of tokens shares the product: one (a
/// decode step), two (a decode step with a speculative draft), three, four-token groups with a remainder, and panel
/// (prefill) sizes — so batching and speculation never change a result.</summary>
public class BatchInvarianceTests
{
    [Theory]
    [InlineData(WeightFormat.F32)]
    [InlineData(WeightFormat.BF16)]
    [InlineData(WeightFormat.Q8_0)]
    [InlineData(WeightFormat.Q4_0)]
    [InlineData(WeightFormat.Q5_0)]
    [InlineData(WeightFormat.Q4_1)]
    [InlineData(WeightFormat.Q5_1)]
    [InlineData(WeightFormat.IQ4_NL)]
    [InlineData(WeightFormat.Q2_K)]
    [InlineData(WeightFormat.Q3_K)]
    [InlineData(WeightFormat.IQ4_XS)]
    [InlineData(WeightFormat.Q4_K)]
    [InlineData(WeightFormat.Q5_K)]
    [InlineData(WeightFormat.Q6_K)]
    public void EachToken_GetsTheSameBits_AloneOrWithOthers(WeightFormat format) =>
        AssertAloneEqualsTogether(format, rows: 37, cols: 512, seed: 5, [2, 3, 5, 6, 9, 11]);

    /// <summary>The 32-weight block formats at widths that are not a multiple of eight blocks (the row kernels' group
    /// of four and single blocks after the groups of eight; V2-Lite's 1408-wide expert rows).</summary>
    [Theory]
    [InlineData(WeightFormat.Q8_0, 416)]
    [InlineData(WeightFormat.Q8_0, 1408)]
    [InlineData(WeightFormat.Q4_0, 416)]
    [InlineData(WeightFormat.Q5_0, 1408)]
    [InlineData(WeightFormat.Q5_0, 96)]
    [InlineData(WeightFormat.Q5_1, 1408)]
    [InlineData(WeightFormat.IQ4_NL, 1408)]
    public void BlockFormats_AtAnyWidth_GiveEachTokenTheSameBitsAloneOrWithOthers(WeightFormat format, int cols) =>
        AssertAloneEqualsTogether(format, rows: 29, cols, seed: cols, [2, 3, 4, 5, 7]);

    /// <summary>Each token's outputs from one product over <c>n</c> tokens equal, bit for bit, its outputs alone.</summary>
    private static void AssertAloneEqualsTogether(WeightFormat format, int rows, int cols, int seed, int[] counts)
    {
        var rng = new Random(seed);
        using Matrix m = Matrix.Create(format, rows, cols);
        for (int r = 0; r < rows; r++) m.SetRow(r, Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray());
        int most = counts.Max();
        float[] x = Enumerable.Range(0, most * cols).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var alone = new float[most * rows];
        for (int t = 0; t < most; t++) m.Forward(x.AsSpan(t * cols, cols), alone.AsSpan(t * rows, rows), 1);
        foreach (int n in counts)
        {
            var together = new float[n * rows];
            m.Forward(x.AsSpan(0, n * cols), together, n);
            Assert.Equal(alone.AsSpan(0, n * rows).ToArray(), together);
        }
    }

    [Theory]
    [InlineData(WeightFormat.F32)]
    [InlineData(WeightFormat.BF16)]
    [InlineData(WeightFormat.F16)]
    [InlineData(WeightFormat.Q8_0)]
    [InlineData(WeightFormat.Q4_0)]
    [InlineData(WeightFormat.Q5_0)]
    [InlineData(WeightFormat.Q5_1)]
    [InlineData(WeightFormat.IQ4_NL)]
    [InlineData(WeightFormat.Q4_K)]
    [InlineData(WeightFormat.Q5_K)]
    [InlineData(WeightFormat.Q6_K)]
    public void RowsFromActivationsPreparedOnce_GiveTheBitsOfTheWholeProduct(WeightFormat format)
    {
        const int rows = 300, cols = 512;
        var rng = new Random(8);
        using Matrix m = Matrix.Create(format, rows, cols);
        for (int r = 0; r < rows; r++) m.SetRow(r, Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray());
        float[] x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var whole = new float[rows];
        m.Forward(x, whole, 1);
        var act = new DeepSeekSharp.Kernels.Quant.QuantizedActivations();
        DeepSeekSharp.Kernels.Quant.QuantizedActivations? prepared = m.PrepareFor(x, 1, act);
        Assert.Equal(m.Traits.Activations == ActivationKind.Float, prepared is null);
        var parts = new float[rows];
        foreach ((int start, int count) in new[] { (0, 128), (128, 16), (144, 144), (288, 12) })
            m.ForwardRows(prepared, x, parts.AsSpan(start, count), start, count);
        Assert.Equal(whole, parts);
        // Activations prepared for another width, or none where the format needs them, are refused.
        var narrow = new DeepSeekSharp.Kernels.Quant.QuantizedActivations();
        narrow.QuantizeK(x.AsSpan(0, 256), 1, 256);
        if (prepared is not null)
        {
            Assert.Throws<ArgumentException>(() => m.ForwardRows(null, x, parts.AsSpan(0, 4), 0, 4));
            Assert.Throws<ArgumentException>(() => m.ForwardRows(narrow, x, parts.AsSpan(0, 4), 0, 4));
        }
        else Assert.Throws<ArgumentException>(() => m.ForwardRows(narrow, x, parts.AsSpan(0, 4), 0, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.ForwardRows(prepared, x, parts, 200, 101));
    }
}
