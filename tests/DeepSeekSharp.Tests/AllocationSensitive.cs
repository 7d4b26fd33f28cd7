namespace DeepSeekSharp.Tests;

/// <summary>Tests that count a thread's allocated bytes (GC.GetAllocatedBytesForCurrentThread) or own a worker pool's
/// timing run alone, after the parallel tests: nothing else in the process starts threads, collections or first
/// uses while they measure.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AllocationSensitive
{
    public const string Name = "Allocation-sensitive (not run in parallel)";
}
