using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

public class DotAxpyTests
{
    private static float[] Random(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

    [Fact]
    public void Dot_EveryPath_MatchesScalarOnLengths0To257()
    {
        var rng = new Random(1);
        for (int n = 0; n <= 257; n++)
        {
            float[] a = Random(rng, n), b = Random(rng, n);
            double exact = 0;
            for (int i = 0; i < n; i++) exact += (double)a[i] * b[i];
            // float32 accumulation of n products of magnitude ≤ 1: error well under 1e-5 · max(1, n/16)
            double tol = 1e-5 * Math.Max(1, n / 16.0);
            Assert.Equal(exact, Dot.Scalar(a, b), tol);
            if (Vector256.IsHardwareAccelerated) Assert.Equal(exact, Dot.V256(a, b), tol);
            if (Vector128.IsHardwareAccelerated) Assert.Equal(exact, Dot.V128(a, b), tol);
            if (Vector512.IsHardwareAccelerated) Assert.Equal(exact, Dot.V512(a, b), tol);
        }
    }

    [Fact]
    public void Dot_SameValuesAtAnyOffset_GiveBitIdenticalResults()
    {
        var rng = new Random(2);
        float[] a = Random(rng, 1000), b = Random(rng, 1000);
        float reference = Dot.Compute(a, b);
        for (int offset = 1; offset < 17; offset++)
        {
            var a2 = new float[1000 + offset];
            var b2 = new float[1000 + offset + 3];
            a.CopyTo(a2, offset);
            b.CopyTo(b2, offset + 3);
            Assert.Equal(reference, Dot.Compute(a2.AsSpan(offset, 1000), b2.AsSpan(offset + 3, 1000)));
        }
    }

    [Fact]
    public void Axpy_MatchesScalarExactly_OnAwkwardLengths()
    {
        var rng = new Random(3);
        foreach (int n in new[] { 0, 1, 7, 8, 15, 16, 17, 33, 100, 257 })
        {
            float[] x = Random(rng, n), y = Random(rng, n);
            float[] expected = (float[])y.Clone();
            Axpy.Scalar(x, 0.37f, expected);
            float[] y128 = (float[])y.Clone();
            Axpy.Compute(x, 0.37f, y);
            Assert.Equal(expected, y); // every element one FMA in both: bit-identical
            if (Vector128.IsHardwareAccelerated)
            {
                int i = Axpy.V128(ref MemoryMarshal.GetArrayDataReference(x), 0.37f, ref MemoryMarshal.GetArrayDataReference(y128), n);
                Axpy.Scalar(x.AsSpan(i), 0.37f, y128.AsSpan(i));
                Assert.Equal(expected, y128);
            }
        }
    }
}
