using System.Diagnostics;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Bench;

/// <summary>GFLOP/s of the training products (<see cref="Gemm"/>) on the shapes a training step runs: the lm_head of a
/// 129k vocabulary over a 256-row chunk, and block projections over a 1024-token batch.</summary>
internal static class GemmBench
{
    public static void Run()
    {
        Console.WriteLine($"threads {WorkerPool.Shared.Threads}; Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}");
        foreach (var (what, n, rows, cols) in new[] { ("lm_head", 259, 129280, 256), ("q_b_proj", 1024, 384, 128), ("expert up", 256, 128, 256), ("o_proj", 1024, 256, 256) })
        {
            float[] x = Fill(n * cols), w = Fill(rows * cols), y = new float[n * rows], dy = Fill(n * rows), dx = new float[n * cols], dw = new float[rows * cols];
            float[] wt = new float[w.Length];
            Transpose.Compute(w, rows, cols, wt);
            double flops = 2.0 * n * rows * cols;
            Console.WriteLine($"{what,-10} n={n} [{rows}, {cols}]: forward {Rate(() => Gemm.ForwardTransposed(x, wt, y, n, rows, cols), flops):F1}, " +
                              $"backward data {Rate(() => Gemm.BackwardData(dx, dy, w, n, rows, cols), flops):F1}, " +
                              $"backward weight {Rate(() => Gemm.BackwardWeight(dw, dy, x, n, rows, cols), flops):F1} GFLOP/s; " +
                              $"transpose {Seconds(() => Transpose.Compute(w, rows, cols, wt)) * 1e3:F1} ms");
        }
    }

    private static float[] Fill(int n)
    {
        var r = new Random(1);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() - 0.5);
        return a;
    }

    private static double Seconds(Action a)
    {
        a();
        int reps = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < 0.5 || reps < 2) { a(); reps++; }
        return sw.Elapsed.TotalSeconds / reps;
    }

    private static double Rate(Action a, double flops) => flops / Seconds(a) / 1e9;
}
