using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Model;

/// <summary>Records every named intermediate of the forward passes it observes (<see cref="TensorName"/>), rows
/// appended call after call (a prefill and then decode steps give one row per position), and writes them as NumPy
/// <c>.npy</c> files — <c>{name}-{layer}.npy</c>, or <c>{name}.npy</c> after the blocks — with an <c>index.json</c> of
/// names, layers and shapes, so two engines can be compared layer by layer on the same weights. A debugging tool: it
/// allocates as it records.</summary>
public sealed class TensorRecorder : IActivationObserver
{
    private readonly Dictionary<(string Name, int Layer), (int Cols, List<float> Values)> _tensors = [];
    private readonly List<(string Name, int Layer)> _order = [];

    /// <summary>The names and layers recorded so far, in the order first seen (a forward pass's order).</summary>
    public IReadOnlyList<(string Name, int Layer)> Recorded => _order;

    public void OnTensor(string name, int layer, ReadOnlySpan<float> values, int rows, int cols)
    {
        if (values.Length != rows * cols) throw new ArgumentException($"'{name}': {values.Length} values for [{rows}, {cols}]", nameof(values));
        if (!_tensors.TryGetValue((name, layer), out var t))
        {
            _tensors[(name, layer)] = t = (cols, []);
            _order.Add((name, layer));
        }
        else if (t.Cols != cols) throw new ArgumentException($"'{name}' of layer {layer} had {t.Cols} columns, now {cols}", nameof(cols));
        foreach (float v in values) t.Values.Add(v);
    }

    /// <summary>A recorded tensor as [rows, cols].</summary>
    public (float[] Values, int Rows, int Cols) Get(string name, int layer = -1)
    {
        if (!_tensors.TryGetValue((name, layer), out var t)) throw new KeyNotFoundException($"no tensor '{name}' of layer {layer} was recorded");
        return ([.. t.Values], t.Values.Count / t.Cols, t.Cols);
    }

    /// <summary>The file a tensor is written to.</summary>
    public static string FileName(string name, int layer) => layer < 0 ? $"{name}.npy" : $"{name}-{layer}.npy";

    /// <summary>Writes every recorded tensor into <paramref name="directory"/> (created if needed), each file through a
    /// temporary file and a rename, then <c>index.json</c>.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        using var index = new MemoryStream();
        using (var json = new Utf8JsonWriter(index, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("tensors");
            foreach ((string name, int layer) in _order)
            {
                var (values, rows, cols) = Get(name, layer);
                string file = FileName(name, layer);
                Formats.AtomicFile.Write(Path.Combine(directory, file), s => WriteNpy(s, values, rows, cols));
                json.WriteStartObject();
                json.WriteString("name", name);
                json.WriteNumber("layer", layer);
                json.WriteString("file", file);
                json.WriteStartArray("shape");
                json.WriteNumberValue(rows);
                json.WriteNumberValue(cols);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        Formats.AtomicFile.Write(Path.Combine(directory, "index.json"), s => s.Write(index.ToArray()));
    }

    /// <summary>NumPy format 1.0: magic, version, a little-endian header length, the header dict padded with spaces to
    /// a multiple of 64 bytes and ended by a newline, then the float32 values row-major.</summary>
    internal static void WriteNpy(Stream s, ReadOnlySpan<float> values, int rows, int cols)
    {
        string dict = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}";
        int unpadded = 10 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        s.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        s.Write(BitConverter.GetBytes((ushort)header.Length));
        s.Write(Encoding.ASCII.GetBytes(header));
        s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
    }
}
