using DeepSeekSharp.Kernels;
using DeepSeekSharp.Linear;

namespace DeepSeekSharp.Tests.Linear;

/// <summary>How a product's rows are cut into chunks for the worker pool.</summary>
public class ChunkingTests
{
    [Fact]
    public void LargeMatrices_KeepFortyEightChunksAThread()
    {
        // V2-Lite's output head in Q8_0: 129,280 rows of 2,176 bytes; 96 chunks of 2.9 MB on two threads.
        int rows = Matrix.ChunkRows(129_280, 2_176, n: 1, threads: 2);
        Assert.Equal(96, Chunks(129_280, rows));
        Assert.True(rows * 2_176L >= Matrix.ChunkWork);
    }

    [Theory]
    [InlineData(3_072, 2_176, 1, 2)]  // V2-Lite's q_proj in Q8_0, one token
    [InlineData(2_048, 2_176, 1, 2)]  // o_proj
    [InlineData(10_944, 2_176, 1, 2)] // the dense layer's gate
    [InlineData(3_072, 2_176, 2, 3)]  // a draft and its token, three threads
    [InlineData(8_192, 1_152, 1, 4)]  // Q4_K rows, four threads
    public void ChunksOfFewTokens_HoldAMegabyteOfWork_AndAWholeNumberPerThread(int rowCount, long rowBytes, int n, int threads)
    {
        int rows = Matrix.ChunkRows(rowCount, rowBytes, n, threads);
        int chunks = Chunks(rowCount, rows);
        Assert.True(rows * rowBytes * n >= Matrix.ChunkWork, $"{rows} rows of {rowBytes} bytes for {n} tokens");
        Assert.True(chunks % threads == 0, $"{chunks} chunks for {threads} threads");
        // The default of 48 a thread would have made them smaller than that:
        Assert.True(Math.Max(4, (rowCount + threads * 48 - 1) / (threads * 48)) * rowBytes * n < Matrix.ChunkWork);
    }

    [Fact]
    public void SmallMatrices_GiveEachThreadOneChunk()
    {
        int rows = Matrix.ChunkRows(576, 2_176, n: 1, threads: 2); // kv_a_proj: 1.25 MB in all
        Assert.Equal(288, rows);
    }

    [Fact]
    public void Prompts_KeepSmallChunks()
    {
        int rows = Matrix.ChunkRows(3_072, 2_176, n: 512, threads: 2); // compute-bound: balance matters more
        Assert.Equal(32, rows);
    }

    [Fact]
    public void AProductCutIntoMegabyteChunks_EqualsItOnOneThread()
    {
        var rng = new Random(3);
        const int rows = 1_000, cols = 2_048; // three chunks of 334, 334 and 332 rows on three threads
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
        using Matrix m = Matrix.FromValues(rows, cols, w, WeightFormat.Q8_0);
        Assert.Equal(3, Chunks(rows, Matrix.ChunkRows(rows, m.RowBytes, 1, 3)));
        float[] one = new float[rows], three = new float[rows];
        using (var pool = new WorkerPool(1))
        using (WorkerPool.Use(pool))
            m.Forward(x, one, 1);
        using (var pool = new WorkerPool(3))
        using (WorkerPool.Use(pool))
            m.Forward(x, three, 1);
        Assert.Equal(one, three);
        Assert.DoesNotContain(0f, three); // every chunk was computed
    }

    private static int Chunks(int rowCount, int rows) => (rowCount + rows - 1) / rows;
}
