using System.Runtime.Intrinsics.X86;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Kernels.Quant;

/// <summary>The fused FP8 kernel against its definition: the row dequantised (<see cref="NumberFormats.Fp8Row"/>,
/// the E4M3 table times the block scale) and dotted by <see cref="Dot"/> on the same vector width — bit for bit.</summary>
public class Fp8DotTests
{
    private static byte[] Codes(Random rng, int n) =>
        Enumerable.Range(0, n).Select(_ => { byte c; do c = (byte)rng.Next(256); while ((c & 0x7F) == 0x7F); return c; }).ToArray();

    private static float[] Floats(Random rng, int n, double lo, double hi) =>
        Enumerable.Range(0, n).Select(_ => (float)(lo + rng.NextDouble() * (hi - lo)) * (rng.Next(2) == 0 ? 1 : -1)).ToArray();

    private static float[] Dequantised(byte[] codes, float[] scales, int blockCols)
    {
        var row = new float[codes.Length];
        NumberFormats.Fp8Row(codes, scales, blockCols, row);
        return row;
    }

    public static TheoryData<int, int> Shapes => new()
    {
        { 0, 128 }, { 1, 128 }, { 15, 128 }, { 17, 128 }, { 63, 64 }, { 64, 64 }, { 65, 64 }, { 127, 128 }, { 129, 128 },
        { 200, 64 }, { 257, 128 }, { 1000, 256 }, { 1408, 128 }, { 7168, 128 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void EveryPath_IsBitIdenticalToTheDequantisedRowsDot(int n, int blockCols)
    {
        var rng = new Random(n * 31 + blockCols);
        byte[] codes = Codes(rng, n);
        float[] scales = Floats(rng, (n + blockCols - 1) / blockCols + 1, 1e-6, 2);
        float[] x = Floats(rng, n, 0, 4);
        float[] row = Dequantised(codes, scales, blockCols);
        Assert.Equal(Dot.Scalar(row, x), Fp8Dot.Scalar(codes, scales, blockCols, x));
        if (Avx2.IsSupported) Assert.Equal(Dot.V256(row, x), Fp8Dot.V256(codes, scales, blockCols, x));
        if (Avx512F.IsSupported) Assert.Equal(Dot.V512(row, x), Fp8Dot.V512(codes, scales, blockCols, x));
        Assert.Equal(Dot.Compute(row, x), Fp8Dot.Compute(codes, scales, blockCols, x));
        var widened = new float[n];
        Fp8Dot.Dequantize(codes, scales, blockCols, widened);
        Assert.Equal(row, widened);
    }

    [Fact]
    public void EveryCode_WidensToItsTableValue_WithSubnormalTinyAndLargeScales()
    {
        // All 254 number codes four times over, against scales that put products in float32's subnormal range (1e-40 is
        // itself subnormal), at ordinary sizes, and just under the 2^8 limit of the fused path.
        byte[] codes = Enumerable.Range(0, 1024).Select(i => (byte)(i % 256)).Where(c => (c & 0x7F) != 0x7F).Take(512).ToArray();
        foreach (float scale in new[] { 1e-40f, 3e-38f, 1e-4f, 1f, 255.9f })
        {
            float[] scales = [scale, -scale * 0.5f, scale * 0.25f, scale];
            float[] row = Dequantised(codes, scales, 128);
            var widened = new float[codes.Length];
            Fp8Dot.Dequantize(codes, scales, 128, widened);
            Assert.Equal(row, widened);
            var rng = new Random(3);
            float[] x = Floats(rng, codes.Length, 0, 1);
            Assert.Equal(Dot.Compute(row, x), Fp8Dot.Compute(codes, scales, 128, x));
            if (Avx2.IsSupported) Assert.Equal(Dot.V256(row, x), Fp8Dot.V256(codes, scales, 128, x));
        }
    }

    [Theory]
    [InlineData(0x7F, 5)]
    [InlineData(0xFF, 130)]
    [InlineData(0x7F, 199)] // in the scalar tail of a 200-wide row
    public void NaNCode_GivesNaN_AsTheDequantisedRowDoes(int code, int at)
    {
        var rng = new Random(at);
        byte[] codes = Codes(rng, 200);
        codes[at] = (byte)code;
        float[] scales = Floats(rng, 4, 0.01, 1);
        float[] x = Floats(rng, 200, 0, 1);
        float[] row = Dequantised(codes, scales, 64);
        Assert.True(float.IsNaN(Dot.Compute(row, x)));
        Assert.True(float.IsNaN(Fp8Dot.Compute(codes, scales, 64, x)));
        if (Avx2.IsSupported) Assert.True(float.IsNaN(Fp8Dot.V256(codes, scales, 64, x)));
        var widened = new float[200];
        Fp8Dot.Dequantize(codes, scales, 64, widened);
        Assert.Equal(row, widened); // NaN where the code is NaN, the same numbers elsewhere
        Assert.True(float.IsNaN(widened[at]));
    }

    [Fact]
    public void Fuses_OnlyBlocksOfWholeVectorGroups_AndScalesBelow256()
    {
        if (!Avx2.IsSupported) return;
        Assert.True(Fp8Dot.Fuses(128, [1f, 255f]));
        Assert.False(Fp8Dot.Fuses(128, [1f, 256f]));
        Assert.False(Fp8Dot.Fuses(128, [float.NaN]));
        Assert.False(Fp8Dot.Fuses(48, [1f]));
    }

    [Theory]
    [InlineData(1, 300f)] // a scale too large for the fused path: the matrix takes the dequantised copy
    [InlineData(1, 0.02f)]
    [InlineData(2, 0.02f)] // two tokens share one widened copy
    [InlineData(5, 0.02f)]
    public unsafe void Matrix_GivesTheDequantisedRowsDot_ForEachToken(int tokens, float scale)
    {
        const int rows = 130, cols = 384;
        var rng = new Random(tokens);
        byte[] codes = Codes(rng, rows * cols);
        float[] scales = Floats(rng, 2 * 3, scale * 0.5, scale);
        float[] x = Floats(rng, tokens * cols, 0, 2);
        var y = new float[tokens * rows];
        fixed (byte* p = codes)
        {
            using Matrix m = Matrix.CreateFp8(rows, cols, p, scales, (128, 128), owner: null);
            m.Forward(x, y, tokens);
            var row = new float[cols];
            for (int r = 0; r < rows; r++)
            {
                m.DequantizeRow(r, row);
                Assert.Equal(Dequantised(codes.AsSpan(r * cols, cols).ToArray(), scales.AsSpan(r / 128 * 3, 3).ToArray(), 128), row);
                for (int t = 0; t < tokens; t++) Assert.Equal(Dot.Compute(row, x.AsSpan(t * cols, cols)), y[t * rows + r]);
            }
        }
    }
}
