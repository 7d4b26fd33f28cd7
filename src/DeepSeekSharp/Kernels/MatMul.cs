using System.Numerics.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>y = x Wᵀ for a batch of rows: x [n, in], W [out, in] row-major, y [n, out].</summary>
/// <remarks>Each output element is one <see cref="Dot.Compute(ReadOnlySpan{float}, ReadOnlySpan{float})"/>
/// computed by exactly one thread, so results are bit-identical for any thread count. Work is split over
/// weight rows (outer loop), and each weight row is used for every token of the batch while it is in cache.</remarks>
public static class MatMul
{
    /// <summary>Below this many multiply-adds the kernel stays on the calling thread.</summary>
    private const long ParallelThreshold = 1 << 18;

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int inDim, int outDim)
    {
        if (x.Length < (long)n * inDim) ThrowHelper.TooShort(nameof(x), (long)n * inDim, x.Length);
        if (w.Length < (long)outDim * inDim) ThrowHelper.TooShort(nameof(w), (long)outDim * inDim, w.Length);
        if (y.Length < (long)n * outDim) ThrowHelper.TooShort(nameof(y), (long)n * outDim, y.Length);
        if ((long)n * inDim * outDim < ParallelThreshold || Environment.ProcessorCount == 1)
        {
            Rows(x, w, y, n, inDim, outDim, 0, outDim);
            return;
        }
        unsafe
        {
            fixed (float* px = x, pw = w, py = y)
            {
                var job = new Job(px, pw, py, n, inDim, outDim);
                int chunks = Math.Min(Environment.ProcessorCount, outDim);
                Parallel.For(0, chunks, job.Run);
            }
        }
    }

    /// <summary>Scalar specification of one output element range; the vectorised Dot is tested against it.</summary>
    internal static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int inDim, int outDim)
    {
        for (int t = 0; t < n; t++)
            for (int o = 0; o < outDim; o++)
            {
                double s = 0;
                for (int i = 0; i < inDim; i++) s += (double)x[t * inDim + i] * w[o * inDim + i];
                y[t * outDim + o] = (float)s;
            }
    }

    private static void Rows(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int inDim, int outDim, int r0, int r1)
    {
        for (int o = r0; o < r1; o++)
        {
            ReadOnlySpan<float> row = w.Slice(o * inDim, inDim);
            for (int t = 0; t < n; t++)
                y[t * outDim + o] = Dot.Compute(row, x.Slice(t * inDim, inDim));
        }
    }

    private readonly unsafe struct Job(float* x, float* w, float* y, int n, int inDim, int outDim)
    {
        private readonly float* _x = x, _w = w, _y = y;

        public void Run(int chunk)
        {
            int chunks = Math.Min(Environment.ProcessorCount, outDim);
            int r0 = (int)((long)outDim * chunk / chunks), r1 = (int)((long)outDim * (chunk + 1) / chunks);
            Rows(new ReadOnlySpan<float>(_x, n * inDim), new ReadOnlySpan<float>(_w, outDim * inDim),
                 new Span<float>(_y, n * outDim), n, inDim, outDim, r0, r1);
        }
    }
}
