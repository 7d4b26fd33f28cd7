namespace DeepSeekSharp.Kernels;

/// <summary>Work for the pool: <see cref="Execute"/> is called once for each chunk index in [0, chunks).</summary>
public abstract class PoolJob
{
    public abstract void Execute(int chunk);
}

/// <summary>A persistent pool of worker threads that split a kernel's chunks (rows, experts) between themselves and
/// the calling thread. Workers spin briefly between kernels (a decode step runs hundreds of them) and then sleep.
/// Chunks are handed out by a shared counter, but a chunk's result never depends on which thread ran it, so
/// results are bit-identical for any thread count. One caller at a time: a second concurrent caller runs its
/// chunks inline on its own thread.</summary>
public sealed class WorkerPool : IDisposable
{
    private static WorkerPool? _shared;
    [ThreadStatic] private static WorkerPool? _override;
    [ThreadStatic] private static int _insideJob; // > 0 while this thread runs a chunk: nested kernels run inline

    /// <summary>The pool kernels on this thread use: one set by <see cref="Use"/>, else the process-wide pool sized by
    /// <see cref="Configure"/> (default: all cores).</summary>
    public static WorkerPool Shared => _override ?? (_shared ??= new WorkerPool(Environment.ProcessorCount));

    /// <summary>Makes kernels called from this thread use <paramref name="pool"/> until the scope is disposed.</summary>
    public static IDisposable Use(WorkerPool pool)
    {
        WorkerPool? previous = _override;
        _override = pool;
        return new Restore(previous);
    }

    private sealed class Restore(WorkerPool? previous) : IDisposable
    {
        public void Dispose() => _override = previous;
    }

    /// <summary>Sets the number of threads (including the caller) of the shared pool.</summary>
    public static void Configure(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        WorkerPool? old = Interlocked.Exchange(ref _shared, new WorkerPool(threads));
        old?.Dispose();
    }

    private readonly Thread[] _workers;
    private readonly object _gate = new();
    // Sleeping workers wait on this monitor. Not a ManualResetEventSlim: the first thread to block on one makes its
    // lock object (24 bytes), and a worker that first sleeps in the middle of a decode step would allocate there.
    private readonly object _sleep = new();
    private int _sleepers;
    private PoolJob? _job;
    private int _chunks, _pending, _runId;
    private long _ticket;     // bits 40..62: run id; 20..39: chunk count; 0..19: next chunk to claim (bit 63 stays 0)
    private long _generation;
    private volatile bool _disposed;
    private const int RunIdMask = 0x7FFFFF;

    /// <summary>The id of the last run (tests start it near the wrap-around).</summary>
    internal int RunId { get => Volatile.Read(ref _runId); set => _runId = value & RunIdMask; }

    public WorkerPool(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        Threads = threads;
        _workers = new Thread[threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"dss-worker-{i + 1}" };
            _workers[i].Start();
        }
    }

    /// <summary>Threads that run chunks, the caller included.</summary>
    public int Threads { get; }

    /// <summary>Runs <paramref name="job"/> for chunks [0, <paramref name="chunks"/>) and returns when all are done.</summary>
    public void Run(PoolJob job, int chunks)
    {
        if (chunks <= 0) return;
        if (chunks >= 1 << 20) throw new ArgumentOutOfRangeException(nameof(chunks), chunks, "at most 2^20 - 1 chunks");
        if (chunks == 1 || _workers.Length == 0 || _insideJob > 0 || !Monitor.TryEnter(_gate))
        {
            _insideJob++;
            try { for (int i = 0; i < chunks; i++) job.Execute(i); }
            finally { _insideJob--; }
            return;
        }
        try
        {
            int run = (_runId + 1) & RunIdMask; // 23 bits: the ticket stays positive, so t >> 40 is the run id
            _job = job;
            _chunks = chunks;
            Volatile.Write(ref _pending, chunks);
            Volatile.Write(ref _runId, run);
            Volatile.Write(ref _ticket, ((long)run << 40) | ((long)chunks << 20)); // claims are only valid for this run
            Interlocked.Increment(ref _generation);
            WakeSleepers();
            Work(job, chunks, run);
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) > 0) spin.SpinOnce(-1);
            _job = null;
        }
        finally
        {
            Monitor.Exit(_gate);
        }
    }

    /// <summary>Runs <paramref name="job"/> once on each of the pool's threads (chunk i on one thread, no thread twice),
    /// e.g. to make per-thread scratch before work that must not allocate: each chunk waits until every thread holds
    /// one. Best effort: where another caller holds the pool, only the calling thread runs it (chunk 0), and a worker
    /// that has not come within five seconds leaves its chunk to whichever thread is free.</summary>
    public void RunOnEachThread(PoolJob job)
    {
        if (_workers.Length == 0 || _insideJob > 0 || !Monitor.TryEnter(_gate))
        {
            job.Execute(0);
            return;
        }
        try { Run(new EachThread(job, Threads), Threads); } // Run takes the (re-entrant) gate again: never inline here
        finally { Monitor.Exit(_gate); }
    }

    private sealed class EachThread(PoolJob inner, int threads) : PoolJob
    {
        private int _arrived;

        public override void Execute(int chunk)
        {
            Interlocked.Increment(ref _arrived);
            long giveUp = System.Diagnostics.Stopwatch.GetTimestamp() + 5 * System.Diagnostics.Stopwatch.Frequency;
            var spin = new SpinWait();
            while (Volatile.Read(ref _arrived) < threads && System.Diagnostics.Stopwatch.GetTimestamp() < giveUp) spin.SpinOnce(-1);
            inner.Execute(chunk);
        }
    }

    /// <summary>Claims and runs chunks of run <paramref name="run"/> until none are left. A worker that read a stale
    /// job cannot claim chunks of a newer run: the ticket carries the run id.</summary>
    private void Work(PoolJob job, int chunks, int run)
    {
        while (true)
        {
            long t = Volatile.Read(ref _ticket);
            if ((int)(t >> 40) != run) return;
            int i = (int)(t & 0xFFFFF);
            if (i >= (int)((t >> 20) & 0xFFFFF)) return; // the count comes from the ticket, never from a stale read
            if (i >= chunks) return;
            if (Interlocked.CompareExchange(ref _ticket, t + 1, t) != t) continue;
            _insideJob++;
            try { job.Execute(i); }
            finally { _insideJob--; }
            Interlocked.Decrement(ref _pending);
        }
    }

    private void WorkerLoop()
    {
        // A thread's reference-type thread statics live in a holder made on its first read of one (32 bytes here):
        // read ours now, so a worker's first nested kernel (it asks for WorkerPool.Shared) does not allocate in the
        // middle of a decode step.
        GC.KeepAlive(_override);
        long seen = 0;
        while (!_disposed)
        {
            // Spin up to ~3 ms for the next kernel (a step's kernels come back to back, and a sleeping thread wakes
            // slowly on a VM), then sleep until woken.
            long spinUntil = System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency / 330;
            while (Interlocked.Read(ref _generation) == seen && !_disposed)
            {
                if (System.Diagnostics.Stopwatch.GetTimestamp() < spinUntil) { Thread.SpinWait(20); continue; }
                Sleep(seen);
            }
            if (_disposed) return;
            seen = Interlocked.Read(ref _generation);
            int run = Volatile.Read(ref _runId);
            PoolJob? job = _job;
            int chunks = _chunks;
            if (job is not null) Work(job, chunks, run);
        }
    }

    /// <summary>Sleeps until a run after <paramref name="seen"/> starts, the pool is disposed, or 100 ms pass. The
    /// sleeper counts itself (a full fence) before it reads the generation, and a run bumps the generation (a full
    /// fence) before it reads the count: either the run sees the sleeper and pulses, which it can only do once the
    /// sleeper waits and has let go of the monitor, or the sleeper sees the run and does not wait.</summary>
    private void Sleep(long seen)
    {
        lock (_sleep)
        {
            Interlocked.Increment(ref _sleepers);
            if (Interlocked.Read(ref _generation) == seen && !_disposed) Monitor.Wait(_sleep, 100);
            Interlocked.Decrement(ref _sleepers);
        }
    }

    private void WakeSleepers()
    {
        if (Volatile.Read(ref _sleepers) == 0) return;
        lock (_sleep) Monitor.PulseAll(_sleep);
    }

    public void Dispose()
    {
        _disposed = true;
        Interlocked.MemoryBarrier();
        WakeSleepers();
        foreach (Thread t in _workers) t.Join(1000);
    }
}
