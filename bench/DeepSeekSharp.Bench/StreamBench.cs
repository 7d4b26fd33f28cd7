using System.Diagnostics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>Decode-shaped products (one token) over weights far larger than the caches, per format, each beside the
/// read probe (<see cref="ReadBandwidth"/>) in the same seconds: how close a format's kernel streams to what the
/// machine reads. Eight matrices [4096, 2048] (≥ 64 MiB for every format; one after another, as a decode step walks
/// its layers), 2 threads then 1, best of 15 passes over all eight after 5 to warm up (kernels and caches).
/// <c>--in-cache</c> instead times one [512, 2048] matrix (at most 1.1 MB: L2) on one thread, best of 3,000 passes:
/// the kernel's arithmetic speed with memory out of the way, what it needs to exceed one core's read bandwidth.
/// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- stream [--in-cache] [FORMAT ...]</c></summary>
internal static unsafe class StreamBench
{
    public static void Run(string[] args)
    {
        bool inCache = args.Contains("--in-cache");
        string[] only = [.. args.Where(a => a != "--in-cache")];
        int rows = inCache ? 512 : 4096, count = inCache ? 1 : 8, passes = inCache ? 3000 : 20, warmUp = inCache ? 100 : 5;
        const int cols = 2048;
        WeightFormat[] formats = only.Length > 0 ? only.Select(Enum.Parse<WeightFormat>).ToArray()
            : [WeightFormat.FP8, WeightFormat.Q8_0, WeightFormat.Q4_K, WeightFormat.BF16, WeightFormat.F16];
        var rng = new Random(1);
        float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = new float[rows];
        Console.WriteLine(KernelPaths.Describe());
        foreach (WeightFormat f in formats)
        {
            Matrix[] ms = Enumerable.Range(0, count).Select(_ => Make(f, rows, cols, w)).ToArray();
            long bytes = ms.Sum(m => m.Bytes);
            foreach (int threads in inCache ? [1] : new[] { Environment.ProcessorCount, 1 })
            {
                using var pool = new WorkerPool(threads);
                using var scope = WorkerPool.Use(pool);
                double best = double.MaxValue;
                for (int pass = 0; pass < passes; pass++)
                {
                    var sw = Stopwatch.StartNew();
                    foreach (Matrix m in ms) m.Forward(x, y, 1);
                    if (pass >= warmUp) best = Math.Min(best, sw.Elapsed.TotalSeconds);
                }
                double read = ReadBandwidth.Measure(threads);
                double gbs = bytes / best / 1e9;
                Console.WriteLine($"{f,-5} threads={threads}: {gbs,5:F1} GB/s of weights ({bytes / 1e6:F0} MB in {best * 1e3:F2} ms), read probe {read / 1e9,5:F1} GB/s: {100 * gbs / (read / 1e9),3:F0}%");
            }
            foreach (Matrix m in ms) m.Dispose();
        }
    }

    private static Matrix Make(WeightFormat f, int rows, int cols, float[] w)
    {
        if (f != WeightFormat.FP8) return Matrix.FromValues(rows, cols, w, f);
        // E4M3 codes with a scale per 128 × 128 tile, as a V3 checkpoint stores them.
        var buffer = new NativeBuffer((long)rows * cols);
        var scales = new float[rows / 128 * (cols / 128)];
        for (int i = 0; i < scales.Length; i++) scales[i] = 0.5f / 448;
        for (long i = 0; i < (long)rows * cols; i++) buffer.Pointer[i] = NumberFormats.FloatToF8E4M3(w[i] * 448 / 0.5f);
        return Matrix.CreateFp8(rows, cols, buffer.Pointer, scales, (128, 128), buffer);
    }
}
