using System.Runtime.Intrinsics;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

public class FastExpTests
{
    private static int UlpDistance(float a, float b) => Math.Abs(BitConverter.SingleToInt32Bits(a) - BitConverter.SingleToInt32Bits(b));

    [Fact]
    public void Scalar_IsWithinTwoUlpOfTheCorrectlyRoundedValue_OverTheFloatRange()
    {
        int worst = 0;
        float worstAt = 0;
        for (float x = -103.9f; x < 88.72f; x += 0.0007f)
        {
            float exact = (float)Math.Exp(x), got = FastExp.Exp(x);
            int d = exact < 1.1754944e-38f ? (Math.Abs(got - exact) <= 2 * float.Epsilon ? 0 : 99) : UlpDistance(exact, got);
            if (d > worst) (worst, worstAt) = (d, x);
        }
        Assert.True(worst <= 2, $"{worst} ulp at {worstAt:R}");
    }

    [Theory]
    [InlineData(0f, 1f)]
    [InlineData(float.NegativeInfinity, 0f)]
    [InlineData(-104.5f, 0f)]
    [InlineData(float.PositiveInfinity, float.PositiveInfinity)]
    [InlineData(88.8f, float.PositiveInfinity)]
    public void Scalar_EdgeValues(float x, float expected) => Assert.Equal(expected, FastExp.Exp(x));

    [Fact]
    public void Scalar_KeepsNaN() => Assert.True(float.IsNaN(FastExp.Exp(float.NaN)));

    [Fact]
    public void VectorForms_GiveTheScalarBits()
    {
        var rng = new Random(5);
        float[] x = Enumerable.Range(0, 4096).Select(i => (float)(rng.NextDouble() * 220 - 120)).ToArray();
        x[3] = float.NaN; x[17] = float.PositiveInfinity; x[40] = float.NegativeInfinity; x[41] = 0f; x[42] = -0f; x[43] = 88.7f;
        if (Vector512.IsHardwareAccelerated)
            for (int i = 0; i + 16 <= x.Length; i += 16)
            {
                Vector512<float> e = FastExp.Exp(Vector512.Create(x.AsSpan(i, 16)));
                for (int l = 0; l < 16; l++) Assert.Equal(BitConverter.SingleToInt32Bits(FastExp.Exp(x[i + l])), BitConverter.SingleToInt32Bits(e[l]));
            }
        if (Vector256.IsHardwareAccelerated)
            for (int i = 0; i + 8 <= x.Length; i += 8)
            {
                Vector256<float> e = FastExp.Exp(Vector256.Create(x.AsSpan(i, 8)));
                for (int l = 0; l < 8; l++) Assert.Equal(BitConverter.SingleToInt32Bits(FastExp.Exp(x[i + l])), BitConverter.SingleToInt32Bits(e[l]));
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(16)]
    [InlineData(45)]
    [InlineData(1408)]
    public void SwiGlu_EveryElementEqualsTheScalarFormula_AndSilu(int n)
    {
        var rng = new Random(n);
        float[] g = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 40 - 20)).ToArray();
        float[] u = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var h = new float[n];
        SwiGlu.Forward(g, u, h);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(BitConverter.SingleToInt32Bits(g[i] / (1f + FastExp.Exp(-g[i])) * u[i]), BitConverter.SingleToInt32Bits(h[i]));
            double silu = g[i] / (1 + Math.Exp(-g[i])) * u[i];
            Assert.Equal(silu, h[i], Math.Max(1e-6, Math.Abs(silu) * 1e-6));
        }
    }

    [Fact]
    public void Softmax_SameRowAtAnyOffset_GivesTheSameBits()
    {
        var rng = new Random(9);
        float[] row = Enumerable.Range(0, 77).Select(_ => (float)(rng.NextDouble() * 30 - 15)).ToArray();
        float[]? first = null;
        for (int offset = 0; offset < 16; offset++)
        {
            var buffer = new float[offset + row.Length];
            row.CopyTo(buffer, offset);
            Softmax.InPlace(buffer.AsSpan(offset));
            float[] got = buffer[offset..];
            if (first is null) first = got;
            else Assert.Equal(first, got);
        }
    }
}
