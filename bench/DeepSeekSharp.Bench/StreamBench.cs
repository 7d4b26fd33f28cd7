using System.Diagnostics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>Decode-shaped products (one token) over weights far larger than the caches, per format, each beside the
/// read probe (<see cref="ReadBandwidth"/>) in the same seconds: how close a format's kernel streams to what the
/// machine reads. 32 matrices [4096, 2048] (≥ 150 MB for every format, so the L3 cache holds little of them: with
/// eight, 71 MB of Q8_0 streamed at 110–125% of the probe; one after another, as a decode step walks its layers),
/// 2 threads then 1, best of 15 passes over all of them after 5 to warm up. Formats this CPU keeps interleaved
/// (Q4_K tiles) are timed in the file layout too, pass by pass in turn, so the two meet the same conditions.
/// <c>--in-cache</c> instead times one [128, 2048] matrix (at most 278 KB: inside L2) on one thread, its activations
/// prepared once and its rows run 64 times per timed pass, best of 300 passes: the kernel's arithmetic speed with
/// memory and per-call work out of the way, what it needs to exceed one core's read bandwidth.
/// <c>--tokens N</c> multiplies N tokens at once, as a verify pass of N − 1 drafts does its dense products.
/// <c>--cols N</c> makes the rows N wide (as many weights per matrix: fewer rows), e.g. 7168 for V3's hidden size.
/// <c>--rows N</c> and <c>--count N</c> set the matrices' shape and number outright, e.g. <c>--rows 1408 --count 96</c>
/// for V2-Lite's expert gate/up projections, <c>--rows 129280 --count 1</c> for its output head.
/// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- stream [--in-cache] [--tokens N] [--cols N] [--rows N] [--count N] [FORMAT ...]</c></summary>
internal static unsafe class StreamBench
{
    public static void Run(string[] args)
    {
        bool inCache = args.Contains("--in-cache");
        int n = BenchArgs.Option(args, "--tokens") ?? 1, cols = BenchArgs.Option(args, "--cols") ?? 2048;
        int[] valued = [.. new[] { "--tokens", "--cols", "--rows", "--count" }.Select(o => Array.IndexOf(args, o))];
        string[] only = [.. args.Where((a, i) => a != "--in-cache" && !valued.Any(v => v >= 0 && (i == v || i == v + 1)))];
        // The same weights per matrix at any width: 4096 rows of 2048 columns, fewer rows of wider ones.
        int rows = BenchArgs.Option(args, "--rows") ?? Math.Max(16, (inCache ? 128 : 4096) * 2048 / cols);
        int count = BenchArgs.Option(args, "--count") ?? (inCache ? 1 : 32), passes = inCache ? 300 : 20, warmUp = inCache ? 30 : 5;
        const int inCacheRepeats = 64;
        WeightFormat[] formats = only.Length > 0 ? only.Select(BenchArgs.Format).ToArray()
            : [WeightFormat.FP8, WeightFormat.Q8_0, WeightFormat.Q4_K, WeightFormat.BF16, WeightFormat.F16];
        var rng = new Random(1);
        float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] x = Enumerable.Range(0, n * cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = new float[n * rows];
        if (n > 1) Console.WriteLine($"{n} tokens a product");
        Console.WriteLine(KernelPaths.Describe());
        foreach (WeightFormat f in formats)
        {
            // Formats kept interleaved on this CPU (Q4_K tiles, Q8_0 panels) are also timed in the file layout, pass
            // by pass in turn, so the two are compared under the same conditions (this host's bandwidth drifts).
            var layouts = new List<(string Name, Matrix[] Ms)>();
            if (Interleaved(f, cols, w))
                layouts.Add(("file layout", Enumerable.Range(0, count).Select(_ => Make(f, rows, cols, w, tiles: false)).ToArray()));
            layouts.Add((layouts.Count > 0 ? "interleaved" : "", Enumerable.Range(0, count).Select(_ => Make(f, rows, cols, w, tiles: true)).ToArray()));
            if (inCache)
            {
                var prepared = layouts.Select(l => l.Ms[0].PrepareFor(x, n, new QuantizedActivations())).ToArray();
                var fastest = new double[layouts.Count];
                Array.Fill(fastest, double.MaxValue);
                for (int pass = 0; pass < passes; pass++)
                    for (int i = 0; i < layouts.Count; i++)
                    {
                        Matrix m = layouts[i].Ms[0];
                        var sw = Stopwatch.StartNew();
                        for (int r = 0; r < inCacheRepeats; r++) m.ForwardRows(prepared[i], x, n, y, rows, 0, rows);
                        if (pass >= warmUp) fastest[i] = Math.Min(fastest[i], sw.Elapsed.TotalSeconds);
                    }
                for (int i = 0; i < layouts.Count; i++)
                {
                    Matrix m = layouts[i].Ms[0];
                    Console.WriteLine($"{f,-5} {layouts[i].Name,-11} in cache, 1 thread: {m.Bytes * inCacheRepeats / fastest[i] / 1e9,5:F1} GB/s of weights ({m.Bytes / 1e3:F0} KB × {inCacheRepeats} in {fastest[i] * 1e6:F1} µs)");
                }
            }
            else
            {
                foreach (int threads in new[] { Environment.ProcessorCount, 1 })
                {
                    using var pool = new WorkerPool(threads);
                    using var scope = WorkerPool.Use(pool);
                    var best = new double[layouts.Count];
                    Array.Fill(best, double.MaxValue);
                    for (int pass = 0; pass < passes; pass++)
                        for (int i = 0; i < layouts.Count; i++)
                        {
                            var sw = Stopwatch.StartNew();
                            foreach (Matrix m in layouts[i].Ms) m.Forward(x, y, n);
                            if (pass >= warmUp) best[i] = Math.Min(best[i], sw.Elapsed.TotalSeconds);
                        }
                    double read = ReadBandwidth.Measure(threads);
                    for (int i = 0; i < layouts.Count; i++)
                    {
                        long bytes = layouts[i].Ms.Sum(m => m.Bytes);
                        double gbs = bytes / best[i] / 1e9;
                        Console.WriteLine($"{f,-5} {layouts[i].Name,-11} threads={threads}: {gbs,5:F1} GB/s of weights ({bytes / 1e6:F0} MB in {best[i] * 1e3:F2} ms), read probe {read / 1e9,5:F1} GB/s: {100 * gbs / (read / 1e9),3:F0}%");
                    }
                }
            }
            foreach (var (_, ms) in layouts)
                foreach (Matrix m in ms) m.Dispose();
        }
    }

    /// <summary>Whether this CPU keeps <paramref name="f"/> in another layout than the file's.</summary>
    private static bool Interleaved(WeightFormat f, int cols, float[] w)
    {
        using Matrix kept = Make(f, 16, cols, w, tiles: true), file = Make(f, 16, cols, w, tiles: false);
        return kept.GetType() != file.GetType();
    }

    private static Matrix Make(WeightFormat f, int rows, int cols, float[] w, bool tiles)
    {
        if (f != WeightFormat.FP8) return Matrix.FromValues(rows, cols, w.AsSpan(0, rows * cols), f, tiles);
        // E4M3 codes with a scale per 128 × 128 tile, as a V3 checkpoint stores them; wide rows in panels as the
        // loader keeps them.
        var buffer = new NativeBuffer((long)rows * cols);
        var scales = new float[(rows + 127) / 128 * ((cols + 127) / 128)]; // a partial tile at an edge has its scale too
        for (int i = 0; i < scales.Length; i++) scales[i] = 0.5f / 448;
        for (long i = 0; i < (long)rows * cols; i++) buffer.Pointer[i] = NumberFormats.FloatToF8E4M3(w[i] * 448 / 0.5f);
        if (!tiles || !PanelMatrix<Fp8Codes>.Suits(rows, cols, (128, 128))) return Matrix.CreateFp8(rows, cols, buffer.Pointer, scales, (128, 128), buffer);
        using (buffer) return PanelMatrix<Fp8Codes>.From(WeightFormat.FP8, rows, cols, buffer.Pointer, scales, (128, 128));
    }
}
