using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>One-token FP8 rows of 2,048 codes on one core in L2 (128 rows, 64 passes) and from memory (256 MB, 2 threads
/// then 1, beside the read probe): the engine's widening (<see cref="WidenedDot{TC}"/>: `vpmovsxbd` from memory, a
/// shift, a mask, sixteen codes a step) against a widening without the cross-lane move — 64 codes loaded at once,
/// stored so that byte k of each 32-bit lane is the k-th vector of sixteen (shift it to the top, arithmetic shift by
/// 4, mask) — the same bits. The activations start OFFSET floats past a 64-byte boundary (0 by default), to show
/// what split 512-bit loads cost. <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- fp8-lanes [OFFSET]</c></summary>
internal static unsafe class Fp8LanesBench
{
    // Codes stored so that byte 4l + k of a 64-code group holds code 16k + l: byte k of every 32-bit lane, widened in
    // place, is the natural 16-code vector k.
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    public static float InLane(byte* codes, int n, float* xs)
    {
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        Vector512<int> mask = Vector512.Create(unchecked((int)0x87F00000));
        for (nuint i = 0; i + 64 <= (nuint)n; i += 64)
        {
            Vector512<int> v = Vector512.Load((int*)(codes + i));
            s0 = Vector512.FusedMultiplyAdd((Vector512.ShiftRightArithmetic(Vector512.ShiftLeft(v, 24), 4) & mask).AsSingle(), Vector512.Load(xs + i), s0);
            s1 = Vector512.FusedMultiplyAdd((Vector512.ShiftRightArithmetic(Vector512.ShiftLeft(v, 16), 4) & mask).AsSingle(), Vector512.Load(xs + i + 16), s1);
            s2 = Vector512.FusedMultiplyAdd((Vector512.ShiftRightArithmetic(Vector512.ShiftLeft(v, 8), 4) & mask).AsSingle(), Vector512.Load(xs + i + 32), s2);
            s3 = Vector512.FusedMultiplyAdd((Vector512.ShiftRightArithmetic(v, 4) & mask).AsSingle(), Vector512.Load(xs + i + 48), s3);
        }
        return Simd512.Sum((s0 + s1) + (s2 + s3));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    public static float Current(byte* codes, int n, float* xs) => WidenedDot<Fp8Codes>.Compute(new ReadOnlySpan<byte>(codes, n), new ReadOnlySpan<float>(xs, n));

    public static void Run(int offset)
    {
        const int cols = 2048;
        var rng = new Random(3);
        foreach (bool inCache in new[] { true, false })
        {
            int rows = inCache ? 128 : 128 * 1024;
            using var file = new NativeBuffer((long)rows * cols, weights: true);
            using var perm = new NativeBuffer((long)rows * cols, weights: true);
            for (long i = 0; i < (long)rows * cols; i++) file.Pointer[i] = (byte)(rng.Next(0, 0x7E) | (rng.Next(2) << 7));
            for (long g = 0; g < (long)rows * cols; g += 64)
                for (int k = 0; k < 4; k++)
                    for (int l = 0; l < 16; l++) perm.Pointer[g + 4 * l + k] = file.Pointer[g + 16 * k + l];
            using var xb = new NativeBuffer(cols * 4 + 64, weights: false);
            float* x = (float*)xb.Pointer + offset;
            for (int c = 0; c < cols; c++) x[c] = (float)(rng.NextDouble() - 0.5);
            for (int r = 0; r < 8; r++)
                if (BitConverter.SingleToInt32Bits(Current(file.Pointer + r * cols, cols, x)) != BitConverter.SingleToInt32Bits(InLane(perm.Pointer + r * cols, cols, x)))
                    throw new InvalidOperationException("bits differ");
            var y = new float[rows];
            foreach (int threads in inCache ? new[] { 1 } : new[] { 2, 1 })
            {
                using var pool = new WorkerPool(threads);
                double[] best = [double.MaxValue, double.MaxValue];
                int chunks = inCache ? 1 : threads * 48;
                for (int pass = 0; pass < (inCache ? 400 : 21); pass++)
                    for (int v = 0; v < 2; v++)
                    {
                        var job = new Job(v == 0 ? file.Pointer : perm.Pointer, cols, rows, v, x, y, inCache ? 64 : 1, chunks);
                        var sw = Stopwatch.StartNew();
                        pool.Run(job, chunks);
                        if (pass > 0) best[v] = Math.Min(best[v], sw.Elapsed.TotalSeconds);
                    }
                double read = inCache ? 0 : ReadBandwidth.Measure(threads) / 1e9;
                double bytes = (double)rows * cols * (inCache ? 64 : 1);
                Console.WriteLine($"{(inCache ? "in cache" : "memory")} threads={threads}: current {bytes / best[0] / 1e9:F1} GB/s, in-lane (stored permuted) {bytes / best[1] / 1e9:F1} GB/s, probe {read:F1}");
            }
        }
    }

    private sealed class Job(byte* codes, int cols, int rows, int variant, float* x, float[] y, int reps, int chunks) : PoolJob
    {
        public override void Execute(int chunk)
        {
            int per = (rows + chunks - 1) / chunks;
            for (int rep = 0; rep < reps; rep++)
                for (int r = chunk * per; r < Math.Min(rows, (chunk + 1) * per); r++)
                    y[r] = variant == 0 ? Current(codes + (long)r * cols, cols, x) : InLane(codes + (long)r * cols, cols, x);
        }
    }
}
