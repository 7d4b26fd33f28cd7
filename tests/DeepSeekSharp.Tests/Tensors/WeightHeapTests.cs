using System.Globalization;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Tests.Tensors;

public unsafe class WeightHeapTests
{
    [Fact]
    public void Buffers_AreAligned_ShareSlabsWithoutOverlap_AndKeepTheirBytes()
    {
        var heap = new WeightHeap(slabBytes: 4 << 20, ownSlabFrom: 3 << 20);
        long[] sizes = [WeightHeap.MinBytes, 100_001, 1 << 20, 777_777, 2_500_000, 65_537];
        var buffers = new (long Start, long Bytes, WeightHeap.Slab Slab)[sizes.Length];
        for (int i = 0; i < sizes.Length; i++)
        {
            byte* p = heap.Allocate(sizes[i], out WeightHeap.Slab slab);
            Assert.Equal(0, (long)p % 64);
            Assert.InRange((long)p, (long)slab.Start, (long)slab.Start + slab.Size - sizes[i]);
            new Span<byte>(p, (int)sizes[i]).Fill((byte)(i + 1));
            buffers[i] = ((long)p, sizes[i], slab);
        }
        Assert.Equal(2, heap.SlabCount); // 4.6 MB of buffers in 4 MiB slabs

        for (int i = 0; i < buffers.Length; i++)
        {
            for (int j = 0; j < i; j++)
                Assert.True(buffers[i].Start >= buffers[j].Start + buffers[j].Bytes || buffers[j].Start >= buffers[i].Start + buffers[i].Bytes,
                    $"buffers {j} and {i} overlap");
            var bytes = new ReadOnlySpan<byte>((byte*)buffers[i].Start, (int)buffers[i].Bytes);
            Assert.Equal(-1, bytes.IndexOfAnyExcept((byte)(i + 1)));
            Assert.Equal(0, (long)buffers[i].Slab.Start % WeightHeap.PageBytes);
        }
    }

    [Fact]
    public void ASlab_GoesBack_WhenItsLastBufferIsFreed()
    {
        var heap = new WeightHeap(slabBytes: 4 << 20, ownSlabFrom: 3 << 20);
        heap.Allocate(2 << 20, out WeightHeap.Slab first);
        heap.Allocate(1 << 20, out WeightHeap.Slab sameSlab);
        heap.Allocate(2 << 20, out WeightHeap.Slab second); // does not fit the first: a new slab
        heap.Allocate(3 << 20, out WeightHeap.Slab own);    // its own slab, rounded to whole 2 MiB pages
        Assert.Same(first, sameSlab);
        Assert.NotSame(first, second);
        Assert.Equal(4L << 20, own.Size);
        Assert.Equal(3, heap.SlabCount);

        heap.Free(own);
        heap.Free(first);
        Assert.Equal(2, heap.SlabCount); // one buffer still lives in the first slab
        heap.Free(sameSlab);
        Assert.Equal(1, heap.SlabCount);
        heap.Free(second);
        Assert.Equal(0, heap.SlabCount);

        heap.Allocate(1 << 20, out WeightHeap.Slab fresh); // the heap carries on after its current slab went
        Assert.Equal(1, heap.SlabCount);
        heap.Free(fresh);
        Assert.Equal(0, heap.SlabCount);
    }

    /// <summary>On Linux with transparent huge pages, a weight matrix lies in a mapping advised for them ("hg" in its
    /// VmFlags) unless DSS_HUGE_PAGES=0 says not to: whether the kernel then grants 2 MiB pages depends on free memory,
    /// the advice does not.</summary>
    [Fact]
    public void WeightMatrices_LieInMemoryAdvisedForHugePages()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/sys/kernel/mm/transparent_hugepage/enabled")) return;
        bool wanted = Environment.GetEnvironmentVariable("DSS_HUGE_PAGES") != "0";
        Assert.Equal(wanted, WeightHeap.Advises);
        using Matrix m = Matrix.Create(WeightFormat.Q8_0, 1408, 2048, tiles: false); // an expert of the v2-lite shape, 2.9 MiB
        long address;
        fixed (byte* row = m.RawRow(0)) address = (long)row;
        Assert.Equal(wanted, VmFlagsAt(address).Contains("hg"));
    }

    private static string[] VmFlagsAt(long address)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, null, out long from)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, null, out long to))
                inside = address >= from && address < to;
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        throw new InvalidOperationException($"no mapping holds 0x{address:x}");
    }
}
