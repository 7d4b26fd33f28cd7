using DeepSeekSharp.Linear;
using System.Diagnostics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>Multiply-accumulates per second of Matrix.Forward for an expert-shaped weight [1408, 2048] and a dense
/// [10944, 2048] one, per format, at batch sizes from decode (1) to prefill (512), on 1 and all threads.
/// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- matmul</c></summary>
internal static class MatMulBench
{
    /// <summary>A prompt's expert products: <paramref name="tokens"/> tokens against each of 64 expert-shaped
    /// matrices [1408, 2048] in turn (200+ MB in Q8_0, so every matrix comes from memory, as in a prefill), on the
    /// calling thread; rounds alternate with nothing else between them.
    /// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- experts [FORMAT] [TOKENS] [ROUNDS] [COUNT] [ROWSxCOLS]</c>
    /// (a COUNT of 1–8 keeps the weights in L2/L3: the kernel's arithmetic rate rather than memory's; ROWSxCOLS another
    /// shape, e.g. 2048x7168 for V3's experts)</summary>
    public static void Experts(WeightFormat format, int tokens, int rounds, int count = 64, int rows = 1408, int cols = 2048)
    {
        var rng = new Random(1);
        float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var experts = new Matrix[count];
        for (int e = 0; e < count; e++)
        {
            w[e] += 1; // distinct matrices
            experts[e] = Matrix.FromValues(rows, cols, w, format);
        }
        float[] x = Enumerable.Range(0, tokens * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(1);
        using var scope = WorkerPool.Use(pool);
        long bytes = experts.Sum(m => m.Bytes);
        for (int r = 0; r < rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            int passes = Math.Max(1, 64 / count);
            for (int p = 0; p < passes; p++)
                foreach (Matrix m in experts) m.Forward(x, y, tokens);
            double s = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"{format} {count} x [{rows} x {cols}], {tokens} tokens, 1 thread: {(double)passes * count * tokens * rows * cols / s / 1e9:F1} GMAC/s, " +
                              $"{passes * bytes / s / 1e9:F1} GB/s of weights");
        }
        foreach (Matrix m in experts) m.Dispose();
    }

    public static void Run(string? only = null)
    {
        var rng = new Random(1);
        var act = new DeepSeekSharp.Kernels.Quant.QuantizedActivations();
        foreach (int n in only is null ? new[] { 48, 512 } : [])
        {
            float[] x = Enumerable.Range(0, n * 2048).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            act.Quantize(x, n, 2048);
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < 20; i++) act.Quantize(x, n, 2048);
            Console.WriteLine($"quantise activations [{n} x 2048] per 32: {sw.Elapsed.TotalMilliseconds / 20:F3} ms");
            sw.Restart();
            for (int i = 0; i < 20; i++) act.QuantizeK(x, n, 2048);
            Console.WriteLine($"quantise activations [{n} x 2048] per 256: {sw.Elapsed.TotalMilliseconds / 20:F3} ms");
        }
        foreach (var (rows, cols) in new[] { (1408, 2048), (2048, 1408), (10944, 2048) })
        foreach (WeightFormat f in new[] { WeightFormat.Q8_0, WeightFormat.Q4_K, WeightFormat.Q6_K, WeightFormat.Q5_0, WeightFormat.BF16 })
        {
            if (!f.Traits().CanHold(cols) || only is not null && !string.Equals(only, f.ToString(), StringComparison.OrdinalIgnoreCase)) continue;
            float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            using Matrix m = Matrix.FromValues(rows, cols, w, f);
            foreach (int n in new[] { 1, 4, 8, 16, 48, 512 })
            {
                float[] x = Enumerable.Range(0, n * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
                var y = new float[n * rows];
                foreach (int threads in new[] { 1, Environment.ProcessorCount })
                {
                    using var pool = new WorkerPool(threads);
                    using var scope = WorkerPool.Use(pool);
                    m.Forward(x, y, n);
                    int reps = Math.Max(1, (int)(2e9 / ((double)n * rows * cols)));
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i < reps; i++) m.Forward(x, y, n);
                    double s = sw.Elapsed.TotalSeconds / reps;
                    Console.WriteLine($"{f,-5} [{rows,5} x {cols}] n={n,-4} threads={threads}: {(double)n * rows * cols / s / 1e9,6:F1} GMAC/s, {m.Bytes / s / 1e9,6:F1} GB/s of weights");
                }
            }
        }
    }
}
