using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>The training products against their scalar specification (one fused multiply-add chain per element, in
/// ascending order): bit-identical on awkward sizes that exercise the 4-row tiles, single rows, one-vector and scalar
/// column tails, and for any thread count.</summary>
public class GemmTests
{
    private static float[] Random(Random rng, int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1))];

    public static TheoryData<int, int, int> Sizes => new()
    {
        { 1, 1, 1 }, { 3, 5, 7 }, { 8, 33, 17 }, { 13, 70, 40 }, { 64, 31, 129 }, { 67, 130, 3 }, { 9, 16, 48 },
    };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void EveryVectorWidth_EqualsTheReferenceBitForBit(int n, int rows, int cols)
    {
        var rng = new Random(n * 31 + rows * 7 + cols);
        float[] x = Random(rng, n * cols), wt = Random(rng, rows * cols), c0 = Random(rng, n * rows);
        foreach (bool accumulate in new[] { false, true })
        {
            float[] want = (float[])c0.Clone();
            Gemm.Reference(x, cols, 1, wt, rows, want, rows, n, rows, cols, accumulate);
            var widths = new List<int> { 0 };
            if (System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated) widths.Add(128); // emulated FMA where the CPU has none: slower, the same bits
            if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated) widths.Add(256);
            if (System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated) widths.Add(512);
            foreach (int width in widths)
            {
                float[] got = (float[])c0.Clone();
                Gemm.RunAt(width, x, cols, 1, wt, rows, got, rows, n, rows, cols, accumulate);
                Assert.True(want.AsSpan().SequenceEqual(got), $"{width}-bit, accumulate {accumulate}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void ThreeProducts_EqualTheReferenceBitForBit(int n, int rows, int cols)
    {
        var rng = new Random(n * 7919 + rows * 31 + cols);
        float[] x = Random(rng, n * cols), w = Random(rng, rows * cols), dy = Random(rng, n * rows);

        float[] y = new float[n * rows], yRef = new float[n * rows], wt = new float[w.Length];
        Transpose.Compute(w, rows, cols, wt);
        Gemm.ForwardTransposed(x, wt, y, n, rows, cols);
        Gemm.Reference(x, cols, 1, wt, rows, yRef, rows, n, rows, cols, accumulate: false);
        Assert.Equal(yRef, y);
        float[] byDots = new float[n * rows];
        Gemm.ForwardByDots(x, w, byDots, n, rows, cols);
        for (int t = 0; t < n; t++)
            for (int o = 0; o < rows; o++) Assert.Equal(Dot.Compute(x.AsSpan(t * cols, cols), w.AsSpan(o * cols, cols)), byDots[t * rows + o]);

        float[] dx = Random(rng, n * cols), dxRef = (float[])dx.Clone();
        Gemm.BackwardData(dx, dy, w, n, rows, cols);
        Gemm.Reference(dy, rows, 1, w, cols, dxRef, cols, n, cols, rows, accumulate: true);
        Assert.Equal(dxRef, dx);

        float[] dw = Random(rng, rows * cols), dwRef = (float[])dw.Clone();
        Gemm.BackwardWeight(dw, dy, x, n, rows, cols);
        Gemm.Reference(dy, 1, rows, x, cols, dwRef, cols, rows, cols, n, accumulate: true);
        Assert.Equal(dwRef, dw);

        // The reference itself is the plain sum of products (to float32 rounding).
        for (int t = 0; t < n; t++)
            for (int o = 0; o < rows; o++)
            {
                double exact = 0;
                for (int c = 0; c < cols; c++) exact += (double)x[t * cols + c] * w[o * cols + c];
                Assert.True(Math.Abs(y[t * rows + o] - exact) <= 1e-5 * cols, $"y[{t},{o}] = {y[t * rows + o]}, exact {exact}");
            }
    }

    [Fact]
    public void Results_DoNotDependOnTheThreadCount()
    {
        var rng = new Random(5);
        int n = 150, rows = 200, cols = 96;
        float[] x = Random(rng, n * cols), w = Random(rng, rows * cols), dy = Random(rng, n * rows);
        (float[] Y, float[] Dx, float[] Dw) Run(int threads)
        {
            using var pool = new WorkerPool(threads);
            using IDisposable _ = WorkerPool.Use(pool);
            float[] y = new float[n * rows], dx = new float[n * cols], dw = new float[rows * cols], wt = new float[w.Length];
            Transpose.Compute(w, rows, cols, wt);
            Gemm.ForwardTransposed(x, wt, y, n, rows, cols);
            Gemm.BackwardData(dx, dy, w, n, rows, cols);
            Gemm.BackwardWeight(dw, dy, x, n, rows, cols);
            return (y, dx, dw);
        }
        var one = Run(1);
        var three = Run(3);
        Assert.Equal(one.Y, three.Y);
        Assert.Equal(one.Dx, three.Dx);
        Assert.Equal(one.Dw, three.Dw);
    }

    [Fact]
    public void WrongLengths_AreRejectedWithTheArgumentName()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => Gemm.ForwardTransposed(new float[6], new float[6], new float[5], 2, 2, 3));
        Assert.Contains("y", e.Message);
    }
}
