using DeepSeekSharp.Linear;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Formats.SafeTensors;

/// <summary>Writes a safetensors file whose tensors are declared up front and then streamed in order, so no tensor
/// needs to be in memory whole. Written to a temporary file and renamed into place when complete.</summary>
public sealed class SafeTensorsWriter : IDisposable
{
    private readonly string _path, _temp;
    private readonly FileStream _stream;
    private readonly List<(string Name, WeightFormat Format, long[] Shape, long Bytes)> _tensors;
    private int _current;
    private long _writtenOfCurrent;
    private bool _committed;

    public SafeTensorsWriter(string path, IEnumerable<(string Name, WeightFormat Format, long[] Shape)> tensors)
    {
        _path = path;
        _temp = path + ".tmp";
        _tensors = tensors.Select(t => (t.Name, t.Format, t.Shape, t.Shape.Aggregate(1L, (a, b) => a * b) * t.Format.ElementBytes())).ToList();
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, dtype, shape, bytes) in _tensors)
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = dtype.SafeTensorsName(), ["shape"] = shape, ["data_offsets"] = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int pad = (8 - json.Length % 8) % 8;
        _stream = new FileStream(_temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        _stream.Write(BitConverter.GetBytes((long)(json.Length + pad)));
        _stream.Write(json);
        for (int i = 0; i < pad; i++) _stream.WriteByte((byte)' ');
        TotalBytes = offset;
    }

    public long TotalBytes { get; }

    /// <summary>Appends raw bytes of the current tensor (tensors are filled in declaration order).</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        while (data.Length > 0)
        {
            if (_current >= _tensors.Count) throw new InvalidOperationException("more data than the declared tensors hold");
            long left = _tensors[_current].Bytes - _writtenOfCurrent;
            int n = (int)Math.Min(left, data.Length);
            _stream.Write(data[..n]);
            data = data[n..];
            _writtenOfCurrent += n;
            if (_writtenOfCurrent == _tensors[_current].Bytes) { _current++; _writtenOfCurrent = 0; }
        }
    }

    /// <summary>Checks every tensor was written, flushes, and renames the temporary file into place.</summary>
    public void Commit()
    {
        while (_current < _tensors.Count && _tensors[_current].Bytes == 0) _current++;
        if (_current != _tensors.Count)
            throw new InvalidOperationException($"tensor '{_tensors[_current].Name}' is incomplete; {_tensors.Count - _current} tensors not written");
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_temp, _path, overwrite: true);
        _committed = true;
    }

    public void Dispose()
    {
        _stream.Dispose();
        if (!_committed && File.Exists(_temp)) File.Delete(_temp);
    }
}
