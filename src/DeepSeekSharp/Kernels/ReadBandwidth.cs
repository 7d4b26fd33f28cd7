using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Kernels;

/// <summary>STREAM-style read bandwidth: sum a buffer far larger than the caches, split over threads, best of
/// several passes — the reference decode speed is quoted against. Each thread sums its contiguous share with eight
/// independent 256-bit accumulators (eight loads in flight per iteration; the same loop in C with OpenMP reads at the
/// same speed, while four 512-bit accumulators read up to a fifth slower on a double-pumped AVX-512 core); 128-bit
/// vectors where 256-bit ones are not accelerated.</summary>
public static unsafe class ReadBandwidth
{
    private sealed class SumJob(byte* data, long bytes, int chunks) : PoolJob
    {
        public readonly float[] Partial = new float[chunks];

        public override void Execute(int chunk)
        {
            long per = bytes / chunks / 256 * 256;
            float* p = (float*)(data + chunk * per);
            Partial[chunk] = Vector256.IsHardwareAccelerated ? Sum256(p, per / 4) : Sum128(p, per / 4);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimised from the first pass: no tier-0 or OSR code, no JIT thread competing
        private static float Sum256(float* p, long n)
        {
            Vector256<float> a = Vector256<float>.Zero, b = a, c = a, d = a, e = a, f = a, g = a, h = a;
            for (long i = 0; i + 64 <= n; i += 64)
            {
                a += Vector256.Load(p + i);
                b += Vector256.Load(p + i + 8);
                c += Vector256.Load(p + i + 16);
                d += Vector256.Load(p + i + 24);
                e += Vector256.Load(p + i + 32);
                f += Vector256.Load(p + i + 40);
                g += Vector256.Load(p + i + 48);
                h += Vector256.Load(p + i + 56);
            }
            return Vector256.Sum((a + b) + (c + d) + ((e + f) + (g + h)));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static float Sum128(float* p, long n)
        {
            Vector128<float> a = Vector128<float>.Zero, b = a, c = a, d = a, e = a, f = a, g = a, h = a;
            for (long i = 0; i + 32 <= n; i += 32)
            {
                a += Vector128.Load(p + i);
                b += Vector128.Load(p + i + 4);
                c += Vector128.Load(p + i + 8);
                d += Vector128.Load(p + i + 12);
                e += Vector128.Load(p + i + 16);
                f += Vector128.Load(p + i + 20);
                g += Vector128.Load(p + i + 24);
                h += Vector128.Load(p + i + 28);
            }
            return Vector128.Sum((a + b) + (c + d) + ((e + f) + (g + h)));
        }
    }

    /// <summary>Bytes per second reading <paramref name="bytes"/> with <paramref name="threads"/> threads.</summary>
    public static double Measure(int threads, long bytes = 1L << 30, int passes = 5)
    {
        using var buffer = new NativeBuffer(bytes, weights: true);
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
