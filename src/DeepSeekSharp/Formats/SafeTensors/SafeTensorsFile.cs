using DeepSeekSharp.Linear;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Formats.SafeTensors;

/// <summary>A memory-mapped safetensors file: 8-byte little-endian header length, a JSON header
/// (<c>{name: {dtype, shape, data_offsets}}</c>, optional <c>__metadata__</c>), then the raw data.
/// The whole header is validated when the file is opened, so later reads can trust it.</summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;
    private readonly long _dataStart;

    private SafeTensorsFile(string path, Dictionary<string, TensorInfo> tensors, Dictionary<string, string> metadata,
        MemoryMappedFile? map, MemoryMappedViewAccessor? view, long dataStart)
    {
        Path = path;
        Tensors = tensors;
        Metadata = metadata;
        _map = map;
        _view = view;
        _dataStart = dataStart;
        if (view is not null)
        {
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
            _base += view.PointerOffset;
        }
    }

    public string Path { get; }
    public string FileName => System.IO.Path.GetFileName(Path);
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static SafeTensorsFile Open(string path)
    {
        string file = System.IO.Path.GetFileName(path);
        long length = new FileInfo(path).Length;
        if (length < 8)
            throw new InvalidDataException($"{file}: truncated: {length} bytes; a safetensors file starts with an 8-byte header length");
        byte[] headerBytes;
        long headerLength;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> len = stackalloc byte[8];
            fs.ReadExactly(len);
            headerLength = BinaryPrimitives.ReadInt64LittleEndian(len);
            if (headerLength < 2 || headerLength > length - 8)
                throw new InvalidDataException($"{file}: truncated or corrupt: header length {headerLength} bytes, but the file has only {length - 8} bytes after the length field");
            if (headerLength > 100_000_000)
                throw new InvalidDataException($"{file}: header length {headerLength} bytes exceeds the 100 MB limit");
            headerBytes = new byte[headerLength];
            fs.ReadExactly(headerBytes);
        }
        long dataStart = 8 + headerLength;
        var (tensors, metadata) = ParseHeader(file, headerBytes, length - dataStart);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        if (length > 0)
        {
            map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        }
        return new SafeTensorsFile(path, tensors, metadata, map, view, dataStart);
    }

    internal static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(string file, byte[] header, long dataLength)
    {
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new InvalidDataException($"{file}: header is not valid UTF-8 (corrupt file?)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: header is not valid JSON: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{file}: header must be a JSON object, found {doc.RootElement.ValueKind}");
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (JsonProperty p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    if (p.Value.ValueKind == JsonValueKind.Object)
                        foreach (JsonProperty m in p.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ToString();
                    continue;
                }
                if (tensors.ContainsKey(p.Name))
                    throw new InvalidDataException($"{file}: tensor '{p.Name}' appears twice in the header");
                tensors.Add(p.Name, ParseEntry(file, p.Name, p.Value, dataLength));
            }
            CheckNoOverlap(file, tensors.Values);
            return (tensors, metadata);
        }
    }

    private static TensorInfo ParseEntry(string file, string name, JsonElement e, long dataLength)
    {
        string Where() => $"{file}: tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{Where()}: header entry must be an object");
        if (!e.TryGetProperty("dtype", out JsonElement dt) || dt.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"{Where()}: header entry has no 'dtype' string");
        string dtName = dt.GetString()!;
        WeightFormat dtype = WeightFormats.FromSafeTensorsName(dtName)
            ?? throw new NotSupportedException($"{Where()}: dtype '{dtName}' is not supported; supported: {WeightFormats.SupportedSafeTensorsNames}");
        if (!e.TryGetProperty("shape", out JsonElement sh) || sh.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{Where()}: header entry has no 'shape' array");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        foreach (JsonElement d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw new InvalidDataException($"{Where()}: shape {sh.GetRawText()} must hold non-negative integers");
            shape[i++] = v;
        }
        if (!e.TryGetProperty("data_offsets", out JsonElement off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end))
            throw new InvalidDataException($"{Where()}: header entry needs 'data_offsets' [begin, end] as integers");
        if (begin < 0 || end < begin)
            throw new InvalidDataException($"{Where()}: data_offsets [{begin}, {end}] are not an ordered pair of non-negative offsets");
        if (end > dataLength)
            throw new InvalidDataException($"{Where()}: data_offsets [{begin}, {end}] lie outside the file: its data section holds {dataLength} bytes (file truncated?)");
        long elements;
        try { elements = shape.Aggregate(1L, (a, b) => checked(a * b)); }
        catch (OverflowException) { throw new InvalidDataException($"{Where()}: shape {TensorInfo.FormatShape(shape)} is too large"); }
        long expected = elements * dtype.ElementBytes();
        if (end - begin != expected)
            throw new InvalidDataException($"{Where()}: data_offsets [{begin}, {end}] span {end - begin} bytes, but shape {TensorInfo.FormatShape(shape)} of {dtName} needs {expected}");
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static void CheckNoOverlap(string file, IEnumerable<TensorInfo> tensors)
    {
        TensorInfo? prev = null;
        foreach (TensorInfo t in tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin))
        {
            if (prev is not null && t.Begin < prev.End)
                throw new InvalidDataException($"{file}: tensors '{prev.Name}' [{prev.Begin}, {prev.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap");
            prev = t;
        }
    }

    /// <summary>The raw bytes of a tensor (valid while this file is open).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo t)
    {
        ObjectDisposedException.ThrowIf(_base == null && _view is not null, this);
        if (t.ByteLength == 0) return ReadOnlySpan<byte>.Empty;
        if (t.ByteLength > int.MaxValue)
            throw new NotSupportedException($"{FileName}: tensor '{t.Name}' is {t.ByteLength} bytes; read it in row ranges");
        return new ReadOnlySpan<byte>(_base + _dataStart + t.Begin, (int)t.ByteLength);
    }

    private Microsoft.Win32.SafeHandles.SafeFileHandle? _handle;

    /// <summary>Copies bytes [offset, offset + destination.Length) of a tensor's data with a positional read (not
    /// through the mapping, so converting a checkpoint does not leave its pages in this process's resident set).
    /// Thread-safe.</summary>
    public void ReadBytes(TensorInfo t, long offset, Span<byte> destination)
    {
        if (offset < 0 || offset + destination.Length > t.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {offset + destination.Length}) is outside tensor '{t.Name}' ({t.ByteLength} bytes)");
        if (_handle is null)
            lock (this) _handle ??= File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        long position = _dataStart + t.Begin + offset;
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(_handle, destination, position);
            if (n <= 0) throw new InvalidDataException($"{FileName}: tensor '{t.Name}' ends early (file truncated while reading?)");
            destination = destination[n..];
            position += n;
        }
    }

    /// <summary>Where a tensor's data starts in the mapped file (valid while this file is open).</summary>
    public byte* DataPointer(TensorInfo t) => _base + _dataStart + t.Begin;

    /// <summary>Bytes [offset, offset + count) of a tensor's data.</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo t, long offset, int count)
    {
        if (offset < 0 || count < 0 || offset + count > t.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {offset + count}) is outside tensor '{t.Name}' ({t.ByteLength} bytes)");
        return new ReadOnlySpan<byte>(_base + _dataStart + t.Begin + offset, count);
    }

    public void Dispose()
    {
        _handle?.Dispose();
        if (_view is not null && _base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}
