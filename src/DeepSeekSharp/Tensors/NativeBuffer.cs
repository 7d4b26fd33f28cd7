using System.Runtime.InteropServices;

namespace DeepSeekSharp.Tensors;

/// <summary>64-byte-aligned native memory (outside the GC heap, never moved), freed once on dispose.</summary>
public sealed unsafe class NativeBuffer : IDisposable
{
    private void* _pointer;
    private readonly WeightHeap.Slab? _slab;

    public NativeBuffer(long bytes) : this(bytes, weights: false) { }

    /// <param name="weights">long-lived memory that is streamed (weights, the bandwidth probe): taken from
    /// <see cref="WeightHeap"/>'s huge-page slabs when it is large enough</param>
    public NativeBuffer(long bytes, bool weights)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Length = bytes;
        _pointer = weights && bytes >= WeightHeap.MinBytes
            ? WeightHeap.Shared.Allocate(bytes, out _slab)
            : NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
        GC.AddMemoryPressure(Math.Max(bytes, 1));
    }

    public long Length { get; }
    public byte* Pointer => _pointer != null ? (byte*)_pointer : throw new ObjectDisposedException(nameof(NativeBuffer));

    public Span<byte> Bytes(long offset, int count)
    {
        if (offset < 0 || count < 0 || offset + count > Length) throw new ArgumentOutOfRangeException(nameof(offset));
        return new Span<byte>(Pointer + offset, count);
    }

    public void Dispose()
    {
        if (_pointer == null) return;
        Free();
        _pointer = null;
        GC.RemoveMemoryPressure(Math.Max(Length, 1));
        GC.SuppressFinalize(this);
    }

    ~NativeBuffer()
    {
        if (_pointer != null) Free();
    }

    private void Free()
    {
        if (_slab is not null) _slab.Heap.Free(_slab);
        else NativeMemory.AlignedFree(_pointer);
    }
}
