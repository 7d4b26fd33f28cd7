using System.Diagnostics;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Bench;

/// <summary>One-token FP8 products over rows wider than L1 holds activations for (V3's o_proj: 16,384 columns, 64 KB of
/// float32 activations per row; its dense down projection 18,432): 256 MB of codes in the file layout, row after row
/// through <see cref="WidenedDot{TC}.Compute"/>, against the same codes regrouped — sixteen rows interleaved panel by
/// panel of PANEL columns, so memory sees one stream and each panel of activations is read from L1 by the sixteen rows
/// (each row's four accumulators kept between panels, in <see cref="Dot"/>'s order: the same bits, checked first).
/// Chunks of sixteen rows, alternating layouts pass by pass, 2 threads then 1, beside the read probe. An experiment
/// for the layout the engine keeps FP8 rows wider than 4,096 columns in (<see cref="PanelMatrix{TC}"/>), at any panel width.
/// <c>dotnet run -c Release --project bench/DeepSeekSharp.Bench -- fp8-panels COLS PANEL</c> (COLS and PANEL multiples of
/// 64, PANEL dividing COLS)</summary>
internal static unsafe class Fp8PanelsBench
{
    private const int G = WidenedDot<Fp8Codes>.PanelRows;
    public static void Run(int cols, int panel)
    {
        if (cols % 64 != 0 || panel % 64 != 0 || cols % panel != 0) throw new ArgumentException("COLS and PANEL must be multiples of 64, PANEL dividing COLS");
        int rows = (int)(256L * 1024 * 1024 / cols) / G * G;
        var rng = new Random(1);
        using var file = new NativeBuffer((long)rows * cols, weights: true);
        using var tiles = new NativeBuffer((long)rows * cols, weights: true);
        for (long i = 0; i < (long)rows * cols; i++) file.Pointer[i] = (byte)(rng.Next(0, 0x7E) | (rng.Next(2) << 7));
        for (int g = 0; g < rows / G; g++)
            for (int c = 0; c < cols; c += panel)
                for (int k = 0; k < G; k++)
                    Buffer.MemoryCopy(file.Pointer + (long)(G * g + k) * cols + c, tiles.Pointer + (long)g * G * cols + (long)G * c + (long)panel * k, panel, panel);
        float[] xs = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = new float[rows];
        var acc = new float[G * 64];
        fixed (float* px = xs, pa = acc)
        {
            for (int o = 0; o < 64; o += G)
            {
                Group(tiles.Pointer + (long)o * cols, cols, panel, px, pa, y.AsSpan(o, G));
                for (int k = 0; k < G; k++)
                    if (BitConverter.SingleToInt32Bits(y[o + k]) != BitConverter.SingleToInt32Bits(WidenedDot<Fp8Codes>.Compute(new ReadOnlySpan<byte>(file.Pointer + (long)(o + k) * cols, cols), xs)))
                        throw new InvalidOperationException($"bits differ at row {o + k}");
            }
        }
        Console.WriteLine($"cols {cols} panel {panel}: bits equal; {rows} rows, {(double)rows * cols / 1e6:F0} MB");
        foreach (int threads in new[] { 2, 1 })
        {
            using var pool = new WorkerPool(threads);
            var times = new List<double>[] { new(), new() };
            for (int pass = 0; pass < 21; pass++)
                foreach (int v in new[] { 0, 1 })
                {
                    var job = new Job(v == 1 ? tiles : file, v == 1, xs, y, cols, panel);
                    var sw = Stopwatch.StartNew();
                    pool.Run(job, rows / G);
                    if (pass > 0) times[v].Add(sw.Elapsed.TotalSeconds);
                }
            double read = ReadBandwidth.Measure(threads) / 1e9, gb = (double)rows * cols / 1e9;
            foreach (var t in times) t.Sort();
            Console.WriteLine($"  threads {threads}: file rows best {gb / times[0][0]:F1} median {gb / times[0][10]:F1} GB/s; 16-row panels best {gb / times[1][0]:F1} median {gb / times[1][10]:F1}; probe {read:F1}");
        }
    }

    private sealed class Job(NativeBuffer buf, bool tiled, float[] xs, float[] y, int cols, int panel) : PoolJob
    {
        [ThreadStatic] static float[]? _acc;
        public override void Execute(int chunk)
        {
            byte* b = buf.Pointer;
            _acc ??= new float[G * 64];
            fixed (float* px = xs, pa = _acc)
            {
                int o = chunk * G;
                if (tiled) Group(b + (long)o * cols, cols, panel, px, pa, y.AsSpan(o, G));
                else for (int k = 0; k < G; k++) y[o + k] = WidenedDot<Fp8Codes>.Compute(new ReadOnlySpan<byte>(b + (long)(o + k) * cols, cols), new ReadOnlySpan<float>(px, cols));
            }
        }
    }

    /// <summary>Sixteen rows, panel by panel: the engine's kernel (<see cref="WidenedDot{TC}.Panels"/>).</summary>
    private static void Group(byte* g, int n, int panel, float* x, float* acc, Span<float> r)
    {
        float* lanes = stackalloc float[G];
        WidenedDot<Fp8Codes>.Panels(g, n, panel, x, acc, lanes);
        new Span<float>(lanes, G).CopyTo(r);
    }
}
