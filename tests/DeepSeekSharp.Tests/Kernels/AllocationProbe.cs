using DeepSeekSharp.Kernels;

namespace DeepSeekSharp.Tests.Kernels;

/// <summary>Reads GC.GetAllocatedBytesForCurrentThread on both threads of a two-thread pool: two chunks that each
/// wait for the other, so no thread runs both; nothing is allocated after the read.</summary>
internal sealed class AllocationProbe : PoolJob
{
    public readonly long[] Bytes = new long[2];
    public readonly long[] ThreadIds = new long[2];
    private int _arrived;

    public void Read(WorkerPool pool)
    {
        _arrived = 0;
        pool.Run(this, 2);
    }

    /// <summary>The bytes the calling thread had allocated at the last read.</summary>
    public long CallerBytes => ThreadIds[0] == Environment.CurrentManagedThreadId ? Bytes[0] : Bytes[1];

    /// <summary>The bytes the pool's worker (the thread that is not the caller) had allocated at the last read.</summary>
    public long WorkerBytes => ThreadIds[0] == Environment.CurrentManagedThreadId ? Bytes[1] : Bytes[0];

    public override void Execute(int chunk)
    {
        Bytes[chunk] = GC.GetAllocatedBytesForCurrentThread();
        ThreadIds[chunk] = Environment.CurrentManagedThreadId;
        Interlocked.Increment(ref _arrived);
        var spin = new SpinWait();
        long giveUp = System.Diagnostics.Stopwatch.GetTimestamp() + 10 * System.Diagnostics.Stopwatch.Frequency;
        while (Volatile.Read(ref _arrived) < 2)
        {
            if (System.Diagnostics.Stopwatch.GetTimestamp() > giveUp) throw new TimeoutException("the pool never ran both probe chunks at once");
            spin.SpinOnce(-1);
        }
    }
}
