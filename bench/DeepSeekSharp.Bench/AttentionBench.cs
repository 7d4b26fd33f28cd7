using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Bench;

/// <summary>GFLOP/s of decode's blocked absorbed attention (<see cref="AbsorbedBlocks"/>) on one thread, for V2-Lite's
/// widths (16 heads, or <c>--heads H</c>: V3's 128; latent 512 + rotary 64): over one block resident in L2, and over a
/// cache of each given depth (heads × depth × (576 + 512) multiply-adds a call, the cache streamed from memory), the
/// blocks in order with each one's rows read ahead while the one before it is multiplied, as decode attends a run of
/// them (from 4,096 positions on, eight blocks folded a slot: <see cref="AbsorbedBlocks.BlocksPerSlot"/>); each depth with the cache as float32 (also with each block touched first instead) and as bfloat16. Depths
/// under four blocks are also timed on two threads (<see cref="Threaded"/>).</summary>
internal static class AttentionBench
{
    public static void Run(string[] args)
    {
        const int rank = 512, rope = 64, width = rank + rope;
        int heads = 16;
        if (args.Length > 1 && args[0] == "--heads") (heads, args) = (BenchArgs.Int(args[1]), args[2..]);
        int[] depths = args.Length > 0 ? args.Select(a => BenchArgs.Int(a)).ToArray() : [LatentAttention.BlockPositions, 4096, 16384];
        Console.WriteLine($"one thread; Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}; heads {heads}, widths {rank} + {rope}");
        var rng = new Random(1);
        foreach (int depth in depths)
        {
            if (depth < LatentAttention.BlockPositions * 4) Threaded(heads, depth);
            AbsorbedBlocks? blocks = AbsorbedBlocks.For(heads, rank, rope, depth);
            if (blocks is null) { Console.WriteLine("no blocked path on this CPU"); return; }
            // Rows from a 64-byte boundary, as the engine's latent cache keeps them.
            float[]? cacheArray = null;
            ushort[]? halfArray = null;
            Span<float> rows = AlignedScratch.Grow(ref cacheArray, depth * width);
            for (int i = 0; i < rows.Length; i++) rows[i] = (float)(rng.NextDouble() - 0.5);
            Bf16Latents.Pack(rows, AlignedScratch.Grow(ref halfArray, depth * width), width); // the cache's bfloat16 layout
            for (int h = 0; h < heads; h++)
            {
                Span<float> q = blocks.Query(0, h);
                for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            }
            int n = AbsorbedBlocks.Blocks(depth), per = AbsorbedBlocks.BlocksPerSlot(depth), slots = AbsorbedBlocks.SlotsFor(depth);
            const int size = LatentAttention.BlockPositions;
            int Rows(int b) => Math.Min(size, depth - b * size);
            // The blocks in order, as one thread of decode attends a run of them: each block's rows read ahead while
            // the one before it is multiplied (or, touched, each block read in a pass of its own first).
            void Attend(bool ahead)
            {
                ReadOnlySpan<float> cache = AlignedScratch.Grow(ref cacheArray, depth * width);
                for (int b = 0; b < n; b++)
                {
                    ReadOnlySpan<float> next = ahead && b + 1 < n ? cache.Slice((b + 1) * size * width, Rows(b + 1) * width) : default;
                    blocks.AttendRows(0, b / per, cache.Slice(b * size * width, Rows(b) * width), Rows(b), 0.07f, next: next, fetched: ahead && b > 0,
                        fold: b % per > 0);
                }
                for (int h = 0; h < heads; h++) blocks.Merge(0, slots, h, 0);
            }
            void AttendBf16()
            {
                ReadOnlySpan<ushort> half = AlignedScratch.Grow(ref halfArray, depth * width);
                for (int b = 0; b < n; b++)
                {
                    ReadOnlySpan<ushort> next = b + 1 < n ? half.Slice((b + 1) * size * width, Rows(b + 1) * width) : default;
                    blocks.AttendRows(0, b / per, half.Slice(b * size * width, Rows(b) * width), Rows(b), 0.07f, next: next, fetched: b > 0, fold: b % per > 0);
                }
                for (int h = 0; h < heads; h++) blocks.Merge(0, slots, h, 0);
            }
            double flops = 2.0 * heads * depth * (width + rank);
            foreach ((string name, Action run, int bytes) in new[]
                { ("f32          ", () => Attend(true), 4), ("f32, touched ", () => Attend(false), 4), ("bf16         ", (Action)AttendBf16, 2) })
            {
                double seconds = Seconds(run);
                Console.WriteLine($"depth {depth,6} {name}: {seconds * 1e3,8:F3} ms  {flops / seconds / 1e9,6:F1} GFLOP/s  cache {depth * width * (double)bytes / seconds / 1e9,5:F1} GB/s");
            }
        }
    }

    /// <summary>A short context's attend step on one thread, and on two with whole blocks a chunk against each block's
    /// heads in parts as decode splits them (<see cref="AbsorbedBlocks.PartsFor"/>).</summary>
    private static void Threaded(int heads, int depth)
    {
        const int rank = 512, rope = 64, width = rank + rope;
        AbsorbedBlocks blocks = AbsorbedBlocks.For(heads, rank, rope, depth)!;
        var rng = new Random(2);
        float[]? cacheArray = null;
        Span<float> rows = AlignedScratch.Grow(ref cacheArray, depth * width);
        for (int i = 0; i < rows.Length; i++) rows[i] = (float)(rng.NextDouble() - 0.5);
        for (int h = 0; h < heads; h++)
        {
            Span<float> q = blocks.Query(0, h);
            for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
        }
        // The rows from their 64-byte boundary, as the engine's cache keeps them (the array's start may be off it).
        int first = (int)(Unsafe.ByteOffset(ref cacheArray![0], ref MemoryMarshal.GetReference(rows)) / sizeof(float));
        int n = AbsorbedBlocks.Blocks(depth);
        foreach ((int threads, int parts) in new[] { (1, 1), (2, 1), (2, blocks.PartsFor(n, 2)) })
        {
            using var pool = new WorkerPool(threads);
            var job = new AttendJob(blocks, cacheArray, first, width, depth, parts);
            double seconds = Seconds(() => pool.Run(job, n * job.Parts));
            Console.WriteLine($"depth {depth,6} f32 : {seconds * 1e3,8:F3} ms on {threads} thread(s), {n} block(s) in {job.Parts} part(s) each");
        }
    }

    /// <summary>Chunk k: part k mod parts of block k / parts of the rows [depth, width] at cache[first..].</summary>
    private sealed class AttendJob(AbsorbedBlocks blocks, float[] cache, int first, int width, int depth, int parts) : PoolJob
    {
        public int Parts => parts;

        public override void Execute(int chunk)
        {
            int b = chunk / parts, s0 = b * LatentAttention.BlockPositions, rows = Math.Min(LatentAttention.BlockPositions, depth - s0);
            blocks.AttendRows(0, b, cache.AsSpan(first + s0 * width, rows * width), rows, 0.07f, chunk - b * parts, parts);
        }
    }

    private static double Seconds(Action a)
    {
        a();
        double best = double.MaxValue;
        for (int round = 0; round < 5; round++)
        {
            int reps = 0;
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < 0.2 || reps < 2) { a(); reps++; }
            best = Math.Min(best, sw.Elapsed.TotalSeconds / reps);
        }
        return best;
    }
}
