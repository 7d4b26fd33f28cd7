using DeepSeekSharp.Linear;
using System.Text;
using DeepSeekSharp.Kernels.Quant;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>Writes a GGUF version 3 file: metadata and tensor infos are declared up front, then each tensor's data
/// is streamed in declaration order (row by row if wanted), each tensor padded to the alignment. Written to a
/// temporary file and renamed into place by <see cref="Commit"/>; disposing without committing deletes it.</summary>
public sealed class GgufWriter : IDisposable
{
    private readonly string _path, _temp;
    private readonly FileStream _stream;
    private readonly List<(string Name, long[] Dims, GgmlType Type, long Bytes)> _tensors;
    private readonly uint _alignment;
    private int _current;
    private long _writtenOfCurrent;
    private bool _committed;

    /// <param name="tensors">names, types and ggml dims (ne0, the row length, first)</param>
    public GgufWriter(string path, IEnumerable<KeyValuePair<string, GgufValue>> metadata, IEnumerable<(string Name, GgmlType Type, long[] Dims)> tensors)
    {
        _path = path;
        _temp = path + ".tmp";
        var meta = metadata.ToList();
        _alignment = meta.FirstOrDefault(kv => kv.Key == GgufFile.AlignmentKey).Value.Value is uint a ? a : GgufFile.DefaultAlignment;
        _tensors = tensors.Select(t => (t.Name, t.Dims, t.Type, t.Dims.Aggregate(1L, (x, y) => x * y) / t.Type.Traits().BlockSize * t.Type.Traits().BlockBytes)).ToList();
        _stream = new FileStream(_temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        var w = new BinaryWriter(_stream, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)meta.Count);
        foreach (var (key, value) in meta)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            if (value.Type == GgufValueType.Array)
            {
                var arr = (Array)value.Value;
                w.Write((uint)value.ElementType);
                w.Write((ulong)arr.Length);
                foreach (object item in arr) WriteScalar(w, value.ElementType, item);
            }
            else WriteScalar(w, value.Type, value.Value);
        }
        long offset = 0;
        foreach (var (name, dims, type, bytes) in _tensors)
        {
            WriteString(w, name);
            w.Write((uint)dims.Length);
            foreach (long d in dims) w.Write((ulong)d);
            w.Write((uint)type);
            w.Write((ulong)offset);
            offset += Align(bytes);
        }
        w.Flush();
        Pad();
        TotalBytes = offset;
    }

    /// <summary>Bytes of tensor data (with padding) the file will hold.</summary>
    public long TotalBytes { get; }

    private long Align(long n) => (n + _alignment - 1) / _alignment * _alignment;

    private void Pad()
    {
        long pad = Align(_stream.Position) - _stream.Position;
        for (long i = 0; i < pad; i++) _stream.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteScalar(BinaryWriter w, GgufValueType t, object v)
    {
        switch (t)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(v)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(v)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(v)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(v)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(v)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(v)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(v)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)v ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)v); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(v)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(v)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(v)); break;
            default: throw new ArgumentException($"cannot write a {t} scalar");
        }
    }

    /// <summary>The next piece of the current tensor's data; a tensor is complete when all its bytes are written.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        if (_current >= _tensors.Count) throw new InvalidOperationException("all declared tensors have been written");
        var (name, _, _, bytes) = _tensors[_current];
        if (_writtenOfCurrent + data.Length > bytes)
            throw new InvalidOperationException($"tensor '{name}' is declared with {bytes} bytes; {_writtenOfCurrent + data.Length} written");
        _stream.Write(data);
        _writtenOfCurrent += data.Length;
        if (_writtenOfCurrent == bytes)
        {
            Pad();
            _current++;
            _writtenOfCurrent = 0;
        }
    }

    /// <summary>Flushes to disk and moves the file into place.</summary>
    public void Commit()
    {
        if (_current != _tensors.Count)
            throw new InvalidOperationException($"only {_current} of {_tensors.Count} tensors were written (next: '{_tensors[_current].Name}')");
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_temp, _path, overwrite: true);
        _committed = true;
    }

    public void Dispose()
    {
        if (_committed) return;
        _stream.Dispose();
        File.Delete(_temp);
    }
}
