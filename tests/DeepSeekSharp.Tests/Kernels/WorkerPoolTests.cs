using System.Collections.Concurrent;
using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

public class WorkerPoolTests
{
    private sealed class RecordThreads : PoolJob
    {
        public readonly ConcurrentDictionary<int, int> ChunkOfThread = new();
        public int Calls;

        public override void Execute(int chunk)
        {
            Interlocked.Increment(ref Calls);
            Assert.True(ChunkOfThread.TryAdd(Environment.CurrentManagedThreadId, chunk), "a thread ran two chunks");
        }
    }

    private sealed class CountChunks : PoolJob
    {
        public int[] Runs = new int[16];
        public override void Execute(int chunk) => Interlocked.Increment(ref Runs[chunk]);
    }

    /// <summary>A long-running process (a server, a training run) makes millions of runs: the run id wraps around and
    /// every chunk of every run is still done exactly once (with a 24-bit id, runs from 2^23 on made the ticket
    /// negative and no thread claimed their chunks: the caller waited forever).</summary>
    [Fact]
    public void RunIdsWrapAround_AndEveryChunkIsStillRunOnce()
    {
        using var pool = new WorkerPool(2);
        pool.RunId = int.MaxValue - 40; // the mask keeps it in range: near the top of the id space
        var job = new CountChunks();
        var caller = new Thread(() => { for (int r = 0; r < 100; r++) pool.Run(job, job.Runs.Length); }) { IsBackground = true };
        caller.Start();
        Assert.True(caller.Join(TimeSpan.FromSeconds(20)), "a run never finished");
        Assert.All(job.Runs, n => Assert.Equal(100, n));
        Assert.True(pool.RunId < 100, $"the run id wrapped (now {pool.RunId})");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RunOnEachThread_RunsOneChunkOnEveryThread(int threads)
    {
        using var pool = new WorkerPool(threads);
        for (int round = 0; round < 3; round++) // also after the workers have gone to sleep
        {
            var job = new RecordThreads();
            pool.RunOnEachThread(job);
            Assert.Equal(threads, job.Calls);
            Assert.Equal(threads, job.ChunkOfThread.Count);
            Assert.Equal(Enumerable.Range(0, threads), job.ChunkOfThread.Values.Order());
            Assert.Contains(Environment.CurrentManagedThreadId, job.ChunkOfThread.Keys);
            if (round == 1) Thread.Sleep(20); // past the workers' ~3 ms spin
        }
    }

    /// <summary>A worker that has never slept may first do so in the middle of a decode step (its spin between kernels
    /// runs out when the machine is loaded): going to sleep and waking allocate nothing, the first time included.
    /// (On a ManualResetEventSlim the first thread to block made its lock object, 24 bytes, on every new worker.)
    /// CI once saw a worker "allocate" 7,896 bytes here, a one-time few-KB allocation like those the decode-step tests
    /// have met on either thread and no run here reproduces; so a worker that allocates is tried again on a new pool,
    /// and only an allocation in both fails — what every new worker does, as the 24 bytes did, still fails.</summary>
    [Fact]
    public void AWorkersFirstSleep_AllocatesNothing()
    {
        static long FirstSleeps()
        {
            using var pool = new WorkerPool(2);
            var probe = new AllocationProbe();
            probe.Read(pool); // straight after the start, while the worker still spins (~3 ms) before its first sleep
            long before = probe.WorkerBytes;
            for (int i = 0; i < 3; i++)
            {
                Thread.Sleep(30); // past the spin: the worker sleeps, and the next read wakes it
                probe.Read(pool);
            }
            return probe.WorkerBytes - before;
        }
        long first = FirstSleeps();
        if (first == 0) return;
        long again = FirstSleeps();
        Assert.True(again == 0, $"a new worker's sleeps allocated {first} bytes, and {again} on a second new pool");
    }

    /// <summary>Runs that start just as a worker gives up spinning (the race between its going to sleep and a run's
    /// wake-up) all finish, with every chunk run once.</summary>
    [Fact]
    public void RunsStartingAsWorkersFallAsleep_AllFinish()
    {
        using var pool = new WorkerPool(3);
        var job = new CountChunks();
        var caller = new Thread(() =>
        {
            for (int r = 0; r < 200; r++)
            {
                pool.Run(job, job.Runs.Length);
                // Around the workers' ~3 ms spin: some runs find them spinning, some asleep, some in between.
                long until = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency * (r % 7) / 1000;
                while (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.Yield();
            }
        }) { IsBackground = true };
        caller.Start();
        Assert.True(caller.Join(TimeSpan.FromSeconds(30)), "a run never finished");
        Assert.All(job.Runs, n => Assert.Equal(200, n));
    }

    [Fact]
    public void RunOnEachThread_InsideAChunk_RunsOnTheCallingThreadOnly()
    {
        using var pool = new WorkerPool(2);
        var inner = new RecordThreads();
        var outer = new Nested(pool, inner);
        pool.Run(outer, 2);
        Assert.Equal(2, inner.Calls); // once from each outer chunk, each on its own thread
        Assert.All(inner.ChunkOfThread.Values, chunk => Assert.Equal(0, chunk));
    }

    private sealed class Nested(WorkerPool pool, RecordThreads inner) : PoolJob
    {
        private int _arrived;

        public override void Execute(int chunk)
        {
            // Both outer chunks are held at once, so each runs on its own thread.
            Interlocked.Increment(ref _arrived);
            var spin = new SpinWait();
            while (Volatile.Read(ref _arrived) < 2) spin.SpinOnce(-1);
            pool.RunOnEachThread(inner);
        }
    }
}
