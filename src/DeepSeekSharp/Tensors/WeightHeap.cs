using System.Runtime.InteropServices;

namespace DeepSeekSharp.Tensors;

/// <summary>Memory for weights, in 2 MiB pages where the OS gives them. A decode step streams every active weight
/// once (a gigabyte for the v2-lite benchmark model): in 4 KiB pages that is a TLB miss every 4 KiB, in 2 MiB pages
/// one every 2 MiB. Linux gives transparent huge pages only to 2 MiB-aligned ranges, and by default only to ranges
/// advised with <c>madvise(MADV_HUGEPAGE)</c>; a 3 MiB expert matrix from <c>malloc</c> is neither aligned nor
/// advised. So weights are carved one after another (64-byte aligned) from 64 MiB slabs that are 2 MiB aligned and
/// advised; a buffer of 16 MiB or more gets a slab of its own. A slab goes back to the OS when the last buffer in it
/// is freed. Elsewhere (another OS, transparent huge pages off) the slabs are plain aligned memory.</summary>
internal sealed unsafe class WeightHeap(long slabBytes = 64L << 20, long ownSlabFrom = 16L << 20)
{
    /// <summary>The heap of every weight matrix.</summary>
    public static readonly WeightHeap Shared = new();

    public const long PageBytes = 2L << 20;

    /// <summary>Buffers smaller than this are left to <see cref="NativeMemory.AlignedAlloc"/>: not worth a slab's space.</summary>
    public const long MinBytes = 64 << 10;

    public sealed class Slab(WeightHeap heap, byte* start, long size)
    {
        public readonly WeightHeap Heap = heap;
        public readonly byte* Start = start;
        public readonly long Size = size;
        public long Used;
        public int Live;
    }

    private readonly object _gate = new();
    private Slab? _current;

    /// <summary>Number of slabs held now (tests).</summary>
    internal int SlabCount { get; private set; }

    /// <summary>Whether huge pages were asked of the OS for the slabs (Linux, madvise found).</summary>
    public static bool Advises => Madvise != null;

    /// <summary><paramref name="bytes"/> (≥ <see cref="MinBytes"/>) of 64-byte-aligned memory and the slab it lies in,
    /// to be handed back to <see cref="Free"/>.</summary>
    public byte* Allocate(long bytes, out Slab slab)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, MinBytes);
        lock (_gate)
        {
            if (bytes >= ownSlabFrom || bytes > slabBytes)
            {
                slab = NewSlab((bytes + PageBytes - 1) & ~(PageBytes - 1));
            }
            else
            {
                if (_current is null || ((_current.Used + 63) & ~63L) + bytes > _current.Size)
                    _current = NewSlab(slabBytes); // the full one goes when its last buffer does
                slab = _current;
            }
            long offset = (slab.Used + 63) & ~63L;
            slab.Used = offset + bytes;
            slab.Live++;
            return slab.Start + offset;
        }
    }

    /// <summary>Frees one buffer of <paramref name="slab"/>; the slab goes when it holds none and no more will be
    /// carved from it.</summary>
    public void Free(Slab slab)
    {
        lock (_gate)
        {
            if (--slab.Live > 0) return;
            if (slab == _current) _current = null;
            Release(slab);
        }
    }

    private Slab NewSlab(long size)
    {
        var start = (byte*)NativeMemory.AlignedAlloc((nuint)size, (nuint)PageBytes);
        if (Madvise != null) Madvise((nint)start, (nuint)size, MadvHugePage); // advice only: a refusal leaves 4 KiB pages
        SlabCount++;
        return new Slab(this, start, size);
    }

    private void Release(Slab slab)
    {
        NativeMemory.AlignedFree(slab.Start);
        SlabCount--;
    }

    private const int MadvHugePage = 14;

    /// <summary>libc's <c>madvise</c>, found at run time (no native library of ours); null off Linux or where it is
    /// not found.</summary>
    private static readonly delegate* unmanaged<nint, nuint, int, int> Madvise = FindMadvise();

    private static delegate* unmanaged<nint, nuint, int, int> FindMadvise()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("DSS_HUGE_PAGES") == "0") return null;
        foreach (string name in (string[])["libc.so.6", "libc"])
            if (NativeLibrary.TryLoad(name, out nint lib) && NativeLibrary.TryGetExport(lib, "madvise", out nint f))
                return (delegate* unmanaged<nint, nuint, int, int>)f;
        return null;
    }
}
