namespace DeepSeekSharp.Kernels;

/// <summary>Scratch arrays that are pinned and start their spans on a 64-byte boundary, so 512-bit loads never split
/// across cache lines (on Zen 4 a split load costs about as much as a second load).</summary>
internal static class AlignedScratch
{
    /// <summary>The first <paramref name="n"/> elements of <paramref name="a"/> from its first 64-byte boundary,
    /// (re)allocating it pinned when too small. Contents are kept only while the array is not replaced.</summary>
    public static unsafe Span<T> Grow<T>(ref T[]? a, int n) where T : unmanaged
    {
        int slack = 64 / sizeof(T);
        if (a is null || a.Length < n + slack) a = GC.AllocateArray<T>(n + slack, pinned: true);
        fixed (T* p = a)
            return a.AsSpan((int)((64 - (nint)p % 64) % 64) / sizeof(T), n);
    }
}
