using DeepSeekSharp.Linear;
using System.IO.MemoryMappedFiles;
using System.Text;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>GGUF metadata value types (gguf.h's enum gguf_type).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>A metadata value: a scalar (byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long,
/// double) or an array (a .NET array of one of those, with its element type).</summary>
public readonly record struct GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue U32(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue I32(int v) => new(GgufValueType.Int32, v);
    public static GgufValue F32(float v) => new(GgufValueType.Float32, v);
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue Str(string v) => new(GgufValueType.String, v);
    public static GgufValue Strings(string[] v) => new(GgufValueType.Array, v, GgufValueType.String);
    public static GgufValue Ints(int[] v) => new(GgufValueType.Array, v, GgufValueType.Int32);
    public static GgufValue Floats(float[] v) => new(GgufValueType.Array, v, GgufValueType.Float32);

    public override string ToString() => Type == GgufValueType.Array
        ? $"[{ElementType} x {((System.Array)Value).Length}]"
        : Value is string s ? $"\"{(s.Length > 60 ? s[..60] + "…" : s)}\"" : Convert.ToString(Value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
}

/// <summary>A tensor of a GGUF file. <see cref="Dims"/> are ggml's ne (fastest-varying first); <see cref="Shape"/> is the
/// row-major shape (ne reversed), so a 2-D weight of Dims [in, out] has Shape [out, in] with rows of <c>in</c>
/// values. <see cref="Offset"/> is relative to the start of the data section.</summary>
public sealed record GgufTensorInfo(string Name, long[] Dims, GgmlType Type, long Offset)
{
    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);
    public long Bytes => ElementCount / Type.Traits().BlockSize * Type.Traits().BlockBytes;
    public long[] Shape => Dims.Reverse().ToArray();
    public string FormatDims() => $"[{string.Join(", ", Dims)}]";
}

/// <summary>A memory-mapped GGUF file (versions 2 and 3, little-endian): header, metadata, tensor infos and the
/// aligned data section. Everything is validated when the file is opened — bad magic, unsupported versions,
/// truncation, duplicate keys or tensors, tensors outside the file, unaligned or overlapping data — so later reads
/// can trust it. Errors name the file and the key or tensor.</summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF"
    public const uint DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle;

    private GgufFile(string path, uint version, Dictionary<string, GgufValue> metadata, List<GgufTensorInfo> tensors, long dataStart, long length)
    {
        Path = path;
        Version = version;
        Metadata = metadata;
        TensorList = tensors;
        Tensors = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        DataStart = dataStart;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        if (length > 0)
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }
    }

    public string Path { get; }
    public string FileName => System.IO.Path.GetFileName(Path);
    public uint Version { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }
    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> TensorList { get; }
    public IReadOnlyDictionary<string, GgufTensorInfo> Tensors { get; }
    public long DataStart { get; }

    /// <summary>Whether a path names a GGUF file (by extension, or by magic for an existing file).</summary>
    public static bool IsGguf(string path)
    {
        if (path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return true;
        if (!File.Exists(path)) return false;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        Span<byte> m = stackalloc byte[4];
        return fs.Read(m) == 4 && BitConverter.ToUInt32(m) == Magic;
    }

    public static GgufFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"GGUF file '{path}' does not exist", path);
        string file = System.IO.Path.GetFileName(path);
        long length = new FileInfo(path).Length;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var r = new HeaderReader(fs, file, length);
        uint magic = r.U32("magic");
        if (magic != Magic)
            throw new InvalidDataException($"{file}: not a GGUF file: magic 0x{magic:X8} (expected 0x{Magic:X8}, \"GGUF\"){(magic == 0x47475546 ? "; this looks like a big-endian GGUF, which is not supported" : "")}");
        uint version = r.U32("version");
        if (version is not (2 or 3))
            throw new NotSupportedException($"{file}: GGUF version {version} is not supported; supported: 2, 3");
        long tensorCount = r.Count("tensor count", 16);
        long kvCount = r.Count("metadata count", 12);

        var metadata = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        for (long i = 0; i < kvCount; i++)
        {
            string key = r.String($"metadata key #{i}");
            var type = (GgufValueType)r.U32($"type of '{key}'");
            GgufValue value = r.Value(type, key);
            if (!metadata.TryAdd(key, value)) throw new InvalidDataException($"{file}: metadata key '{key}' appears twice");
        }

        uint alignment = DefaultAlignment;
        if (metadata.TryGetValue(AlignmentKey, out GgufValue a))
        {
            if (a.Type != GgufValueType.UInt32 || (uint)a.Value == 0 || ((uint)a.Value & ((uint)a.Value - 1)) != 0)
                throw new InvalidDataException($"{file}: metadata '{AlignmentKey}' must be a power-of-two uint32, found {a.Type} {a}");
            alignment = (uint)a.Value;
        }

        var tensors = new List<GgufTensorInfo>((int)Math.Min(tensorCount, 1 << 16));
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (long i = 0; i < tensorCount; i++)
        {
            string name = r.String($"name of tensor #{i}");
            if (!names.Add(name)) throw new InvalidDataException($"{file}: tensor '{name}' appears twice");
            uint nDims = r.U32($"dimension count of tensor '{name}'");
            if (nDims is 0 or > 4) throw new InvalidDataException($"{file}: tensor '{name}' has {nDims} dimensions; GGUF tensors have 1 to 4");
            var dims = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong ne = r.U64($"dimension {d} of tensor '{name}'");
                if (ne > int.MaxValue) throw new InvalidDataException($"{file}: tensor '{name}' dimension {d} is {ne}; too large");
                dims[d] = (long)ne;
                elements = checked(elements * (long)ne);
            }
            var type = (GgmlType)r.U32($"type of tensor '{name}'");
            if (!GgmlBlocks.IsSupported(type)) throw GgmlBlocks.Unsupported(type, name);
            int bs = type.Traits().BlockSize;
            if (dims[0] % bs != 0)
                throw new InvalidDataException($"{file}: tensor '{name}' is {type} with rows of {dims[0]} values; {type} stores rows in blocks of {bs}");
            ulong offset = r.U64($"offset of tensor '{name}'");
            if (offset % alignment != 0)
                throw new InvalidDataException($"{file}: tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}");
            if (offset > (ulong)length) throw new InvalidDataException($"{file}: tensor '{name}' data offset {offset} lies outside the file ({length} bytes)");
            tensors.Add(new GgufTensorInfo(name, dims, type, (long)offset));
        }

        long dataStart = (r.Position + alignment - 1) / alignment * alignment;
        long dataLength = length - dataStart;
        foreach (GgufTensorInfo t in tensors)
            if (t.Offset + t.Bytes > dataLength)
                throw new InvalidDataException($"{file}: truncated: tensor '{t.Name}' ({t.Type} {t.FormatDims()}, {t.Bytes} bytes at data offset {t.Offset}) ends at byte {dataStart + t.Offset + t.Bytes}, past the end of the file ({length} bytes)");
        GgufTensorInfo? previous = null;
        foreach (GgufTensorInfo t in tensors.OrderBy(t => t.Offset))
        {
            if (previous is not null && t.Offset < previous.Offset + previous.Bytes && t.Bytes > 0)
                throw new InvalidDataException($"{file}: tensors '{previous.Name}' and '{t.Name}' overlap in the data section");
            if (t.Bytes > 0) previous = t;
        }
        return new GgufFile(path, version, metadata, tensors, dataStart, length);
    }

    /// <summary>The tensor's data in the mapped file (valid while this file is open).</summary>
    public byte* DataPointer(GgufTensorInfo t) => _base + DataStart + t.Offset;

    /// <summary>Reads bytes of a tensor's data with positional file reads (no mapped pages are touched, so copying
    /// weights into anonymous memory does not also leave them resident as file pages).</summary>
    public void ReadBytes(GgufTensorInfo t, long offset, Span<byte> destination)
    {
        if (offset < 0 || offset + destination.Length > t.Bytes) throw new ArgumentOutOfRangeException(nameof(offset));
        long at = DataStart + t.Offset + offset;
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(_handle, destination, at);
            if (n <= 0) throw new EndOfStreamException($"{FileName}: unexpected end of file reading tensor '{t.Name}'");
            destination = destination[n..];
            at += n;
        }
    }

    public ReadOnlySpan<byte> Bytes(GgufTensorInfo t, long offset, int count)
    {
        if (offset < 0 || offset + count > t.Bytes) throw new ArgumentOutOfRangeException(nameof(offset));
        return new ReadOnlySpan<byte>(DataPointer(t) + offset, count);
    }

    // Typed metadata access. Integers of any width convert when the value fits; errors name the key.

    public bool Has(string key) => Metadata.ContainsKey(key);

    public string? String(string key) => Get(key) switch
    {
        null => null,
        { Type: GgufValueType.String } v => (string)v.Value,
        var v => throw WrongType(key, v.Value, "a string"),
    };

    public long? Integer(string key)
    {
        if (Get(key) is not { } v) return null;
        return v.Type switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.UInt16 or GgufValueType.Int16 or GgufValueType.UInt32
                or GgufValueType.Int32 or GgufValueType.Int64 => Convert.ToInt64(v.Value),
            GgufValueType.UInt64 when (ulong)v.Value <= long.MaxValue => (long)(ulong)v.Value,
            _ => throw WrongType(key, v, "an integer"),
        };
    }

    public double? Number(string key)
    {
        if (Get(key) is not { } v) return null;
        return v.Type switch
        {
            GgufValueType.Float32 => (float)v.Value,
            GgufValueType.Float64 => (double)v.Value,
            GgufValueType.String or GgufValueType.Array or GgufValueType.Bool => throw WrongType(key, v, "a number"),
            _ => Integer(key),
        };
    }

    public bool? Flag(string key) => Get(key) switch
    {
        null => null,
        { Type: GgufValueType.Bool } v => (bool)v.Value,
        var v => throw WrongType(key, v, "a bool"),
    };

    public T[]? Array<T>(string key)
    {
        if (Get(key) is not { } v) return null;
        if (v.Type == GgufValueType.Array && v.Value is T[] arr) return arr;
        if (v.Type == GgufValueType.Array && typeof(T) == typeof(int) && v.Value is System.Array ints && v.ElementType is not (GgufValueType.String or GgufValueType.Float32 or GgufValueType.Float64 or GgufValueType.Bool))
            return ints.Cast<object>().Select(o => (T)(object)Convert.ToInt32(o)).ToArray();
        throw WrongType(key, v, $"an array of {typeof(T).Name}");
    }

    private GgufValue? Get(string key) => Metadata.TryGetValue(key, out GgufValue v) ? v : null;

    private InvalidDataException WrongType(string key, object v, string expected) =>
        new($"{FileName}: metadata '{key}' must be {expected}, found {(v is GgufValue g ? $"{g.Type} {g}" : v)}");

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
        _handle.Dispose();
    }

    /// <summary>Reads the header with every length checked against what is left of the file.</summary>
    private sealed class HeaderReader(Stream s, string file, long length)
    {
        private readonly byte[] _buf = new byte[8];
        public long Position { get; private set; }

        private ReadOnlySpan<byte> Take(int n, string what)
        {
            if (Position + n > length)
                throw new InvalidDataException($"{file}: truncated: the file ends ({length} bytes) while reading {what}");
            s.ReadExactly(_buf, 0, n);
            Position += n;
            return _buf.AsSpan(0, n);
        }

        public uint U32(string what) => BitConverter.ToUInt32(Take(4, what));
        public ulong U64(string what) => BitConverter.ToUInt64(Take(8, what));

        /// <summary>A count of items each at least <paramref name="minBytes"/> long, checked against the file size.</summary>
        public long Count(string what, int minBytes)
        {
            ulong n = U64(what);
            if (n > (ulong)((length - Position) / minBytes))
                throw new InvalidDataException($"{file}: {what} {n} cannot fit in the {length - Position} bytes left of the file (corrupt or truncated)");
            return (long)n;
        }

        public string String(string what)
        {
            ulong n = U64($"the length of {what}");
            if (n > (ulong)(length - Position))
                throw new InvalidDataException($"{file}: truncated or corrupt: {what} claims {n} bytes, only {length - Position} are left");
            var bytes = new byte[n];
            s.ReadExactly(bytes);
            Position += (long)n;
            try { return new UTF8Encoding(false, true).GetString(bytes); }
            catch (DecoderFallbackException) { throw new InvalidDataException($"{file}: {what} is not valid UTF-8"); }
        }

        public GgufValue Value(GgufValueType type, string key)
        {
            string what = $"the value of '{key}'";
            if (type == GgufValueType.Array)
            {
                var et = (GgufValueType)U32($"the element type of '{key}'");
                if (et == GgufValueType.Array) throw new InvalidDataException($"{file}: metadata '{key}' is an array of arrays, which GGUF does not allow");
                if (!Enum.IsDefined(et)) throw new InvalidDataException($"{file}: metadata '{key}' has unknown element type {(uint)et}");
                long n = Count($"the length of '{key}'", et == GgufValueType.String ? 8 : ScalarSize(et));
                return new GgufValue(GgufValueType.Array, ReadArray(et, n, key), et);
            }
            if (!Enum.IsDefined(type)) throw new InvalidDataException($"{file}: metadata '{key}' has unknown value type {(uint)type}");
            return new GgufValue(type, Scalar(type, what));
        }

        private static int ScalarSize(GgufValueType t) => t switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            _ => 8,
        };

        private object Scalar(GgufValueType t, string what) => t switch
        {
            GgufValueType.UInt8 => Take(1, what)[0],
            GgufValueType.Int8 => (sbyte)Take(1, what)[0],
            GgufValueType.UInt16 => BitConverter.ToUInt16(Take(2, what)),
            GgufValueType.Int16 => BitConverter.ToInt16(Take(2, what)),
            GgufValueType.UInt32 => BitConverter.ToUInt32(Take(4, what)),
            GgufValueType.Int32 => BitConverter.ToInt32(Take(4, what)),
            GgufValueType.Float32 => BitConverter.ToSingle(Take(4, what)),
            GgufValueType.Bool => Take(1, what)[0] switch
            {
                0 => false, 1 => true,
                var b => throw new InvalidDataException($"{file}: {what} is a bool stored as {b}; must be 0 or 1"),
            },
            GgufValueType.String => String(what),
            GgufValueType.UInt64 => BitConverter.ToUInt64(Take(8, what)),
            GgufValueType.Int64 => BitConverter.ToInt64(Take(8, what)),
            GgufValueType.Float64 => BitConverter.ToDouble(Take(8, what)),
            _ => throw new InvalidDataException($"{file}: {what} has unknown type {(uint)t}"),
        };

        private System.Array ReadArray(GgufValueType et, long n, string key)
        {
            string what = $"an element of '{key}'";
            System.Array arr = et switch
            {
                GgufValueType.UInt8 => new byte[n], GgufValueType.Int8 => new sbyte[n], GgufValueType.UInt16 => new ushort[n],
                GgufValueType.Int16 => new short[n], GgufValueType.UInt32 => new uint[n], GgufValueType.Int32 => new int[n],
                GgufValueType.Float32 => new float[n], GgufValueType.Bool => new bool[n], GgufValueType.String => new string[n],
                GgufValueType.UInt64 => new ulong[n], GgufValueType.Int64 => new long[n], _ => new double[n],
            };
            for (long i = 0; i < n; i++) arr.SetValue(Scalar(et, what), i);
            return arr;
        }
    }
}
