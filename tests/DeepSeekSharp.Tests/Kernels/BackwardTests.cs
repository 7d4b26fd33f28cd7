using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>Each backward kernel against central finite differences of its forward formula evaluated in float64, on
/// random inputs of awkward sizes: the loss is L = Σ dy ⊙ f(x), so ∂L/∂x is what the kernel accumulates.</summary>
public class BackwardTests
{
    private const double H = 1e-4;

    private static float[] Random(Random rng, int n, double scale = 1) =>
        [.. Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale))];

    /// <summary>∂/∂v_i of L(v) by central differences, in float64.</summary>
    private static double[] Numeric(Func<double[], double> loss, float[] at)
    {
        double[] v = [.. at.Select(x => (double)x)], grad = new double[v.Length];
        for (int i = 0; i < v.Length; i++)
        {
            double keep = v[i];
            v[i] = keep + H; double up = loss(v);
            v[i] = keep - H; double down = loss(v);
            v[i] = keep;
            grad[i] = (up - down) / (2 * H);
        }
        return grad;
    }

    private static void Close(ReadOnlySpan<float> analytic, double[] numeric, string what)
    {
        double max = numeric.Max(Math.Abs), err = 0;
        for (int i = 0; i < numeric.Length; i++) err = Math.Max(err, Math.Abs(analytic[i] - numeric[i]));
        // float32 kernels against float64 differences: rounding of ~1e-7 relative per operation, summed over a row.
        Assert.True(err <= 2e-4 * Math.Max(max, 1e-3), $"{what}: max |analytic − numeric| = {err:E2}, max |grad| = {max:E2}");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(2, 33)]
    [InlineData(5, 64)]
    public void RmsNormBackward_MatchesFiniteDifferences(int rows, int d)
    {
        var rng = new Random(rows * 100 + d);
        float[] x = Random(rng, rows * d), w = Random(rng, d), dy = Random(rng, rows * d);
        const float eps = 1e-6f;
        double Loss(double[] xv, double[] wv)
        {
            double l = 0;
            for (int r = 0; r < rows; r++)
            {
                double ss = 0;
                for (int i = 0; i < d; i++) ss += xv[r * d + i] * xv[r * d + i];
                double inv = 1 / Math.Sqrt(ss / d + eps);
                for (int i = 0; i < d; i++) l += dy[r * d + i] * xv[r * d + i] * inv * wv[i];
            }
            return l;
        }
        float[] dx = new float[x.Length], dw = new float[d];
        RmsNorm.Backward(dx, dw, dy, x, w, eps);
        double[] wd = [.. w.Select(v => (double)v)], xd = [.. x.Select(v => (double)v)];
        Close(dx, Numeric(v => Loss(v, wd), x), "dx");
        Close(dw, Numeric(v => Loss(xd, v), w), "dweight");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(100)]
    public void SwiGluBackward_MatchesFiniteDifferences(int n)
    {
        var rng = new Random(n);
        float[] g = Random(rng, n, 4), u = Random(rng, n), dh = Random(rng, n);
        double Loss(double[] gv, double[] uv)
        {
            double l = 0;
            for (int i = 0; i < n; i++) l += dh[i] * gv[i] / (1 + Math.Exp(-gv[i])) * uv[i];
            return l;
        }
        float[] dg = new float[n], du = new float[n];
        SwiGlu.Backward(dg, du, dh, g, u);
        double[] gd = [.. g.Select(v => (double)v)], ud = [.. u.Select(v => (double)v)];
        Close(dg, Numeric(v => Loss(v, ud), g), "dgate");
        Close(du, Numeric(v => Loss(gd, v), u), "dup");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 4)]
    [InlineData(2, 9)]
    public void RopeBackward_MatchesFiniteDifferences(int vectors, int pairs)
    {
        var rng = new Random(vectors * 10 + pairs);
        float[] x = Random(rng, vectors * 2 * pairs), dy = Random(rng, x.Length), angle = Random(rng, pairs, 3);
        float[] cos = [.. angle.Select(a => MathF.Cos(a))], sin = [.. angle.Select(a => MathF.Sin(a))];
        double Loss(double[] xv)
        {
            double l = 0;
            for (int off = 0; off < xv.Length; off += 2 * pairs)
                for (int i = 0; i < pairs; i++)
                {
                    double a = xv[off + 2 * i], b = xv[off + 2 * i + 1];
                    l += dy[off + 2 * i] * (a * cos[i] - b * sin[i]) + dy[off + 2 * i + 1] * (a * sin[i] + b * cos[i]);
                }
            return l;
        }
        float[] dx = (float[])dy.Clone();
        Rope.ApplyInterleavedBackward(dx, cos, sin);
        Close(dx, Numeric(Loss, x), "dx");
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(7, 3)]
    [InlineData(300, 299)]
    public void CrossEntropyBackward_MatchesFiniteDifferences(int vocab, int target)
    {
        var rng = new Random(vocab);
        float[] z = Random(rng, vocab, 5);
        double Loss(double[] zv)
        {
            double max = zv.Max(), sum = zv.Sum(v => Math.Exp(v - max));
            return 0.5 * (max + Math.Log(sum) - zv[target]);
        }
        float[] dz = new float[vocab];
        CrossEntropy.Backward(dz, z, target, scale: 0.5f);
        Close(dz, Numeric(Loss, z), "dlogits");
        Assert.Equal(Loss([.. z.Select(v => (double)v)]) * 2, CrossEntropy.Forward(z, target), 1e-9);
    }

    [Fact]
    public void CrossEntropy_OfUniformLogits_IsLogVocab()
    {
        Assert.Equal(Math.Log(4), CrossEntropy.Forward([0.5f, 0.5f, 0.5f, 0.5f], 2), 1e-12);
        Assert.Throws<ArgumentOutOfRangeException>(() => CrossEntropy.Forward([0f, 1f], 2));
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 5, 7)]
    [InlineData(4, 17, 33)]
    [InlineData(9, 40, 21)]
    public void LinearBackward_MatchesFiniteDifferences(int n, int rows, int cols)
    {
        var rng = new Random(n * 1000 + rows * 10 + cols);
        float[] x = Random(rng, n * cols), w = Random(rng, rows * cols), dy = Random(rng, n * rows);
        double Loss(double[] xv, double[] wv)
        {
            double l = 0;
            for (int t = 0; t < n; t++)
                for (int o = 0; o < rows; o++)
                {
                    double y = 0;
                    for (int c = 0; c < cols; c++) y += wv[o * cols + c] * xv[t * cols + c];
                    l += dy[t * rows + o] * y;
                }
            return l;
        }
        float[] dx = new float[x.Length], dw = new float[w.Length];
        Gemm.BackwardData(dx, dy, w, n, rows, cols);
        Gemm.BackwardWeight(dw, dy, x, n, rows, cols);
        double[] xd = [.. x.Select(v => (double)v)], wd = [.. w.Select(v => (double)v)];
        Close(dx, Numeric(v => Loss(v, wd), x), "dx");
        Close(dw, Numeric(v => Loss(xd, v), w), "dW");
    }
}
