using System.Diagnostics;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>STREAM-style read bandwidth: sum a buffer far larger than the caches with 512-bit loads, split over
/// threads, best of several passes. The reference that decode speed is quoted against.</summary>
public static unsafe class ReadBandwidth
{
    private sealed class SumJob(byte* data, long bytes, int chunks) : PoolJob
    {
        public readonly float[] Partial = new float[chunks];

        public override void Execute(int chunk)
        {
            long per = bytes / chunks / 256 * 256;
            float* p = (float*)(data + chunk * per);
            long n = per / 4;
            Vector512<float> a = Vector512<float>.Zero, b = a, c = a, d = a;
            for (long i = 0; i + 64 <= n; i += 64)
            {
                a += Vector512.Load(p + i);
                b += Vector512.Load(p + i + 16);
                c += Vector512.Load(p + i + 32);
                d += Vector512.Load(p + i + 48);
            }
            Partial[chunk] = Vector512.Sum(a + b + c + d);
        }
    }

    /// <summary>Bytes per second reading <paramref name="bytes"/> with <paramref name="threads"/> threads.</summary>
    public static double Measure(int threads, long bytes = 1L << 30, int passes = 5)
    {
        using var buffer = new NativeBuffer(bytes);
        new Span<byte>(buffer.Pointer, (int)Math.Min(bytes, int.MaxValue)).Fill(1);
        for (long off = int.MaxValue; off < bytes; off += int.MaxValue)
            new Span<byte>(buffer.Pointer + off, (int)Math.Min(bytes - off, int.MaxValue)).Fill(1);
        using var pool = new WorkerPool(threads);
        var job = new SumJob(buffer.Pointer, bytes, threads);
        double best = 0;
        for (int i = 0; i < passes; i++)
        {
            var sw = Stopwatch.StartNew();
            pool.Run(job, threads);
            best = Math.Max(best, bytes / sw.Elapsed.TotalSeconds);
        }
        return best;
    }
}
