using DeepSeekSharp.Formats;
using DeepSeekSharp.Linear;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Training;

/// <summary>A <see cref="ParameterSet"/>'s current values as a tensor source, under the checkpoint's names (the MTP
/// module's embedding and head served from the tied main tensors, the routers' biases from their state), so the
/// engine can run the weights being trained: <c>DeepSeekModel.FromSource(ps.Config, new ParameterSource(ps))</c>.
/// The engine copies what it reads; later training steps do not change a model already made.</summary>
public sealed class ParameterSource(ParameterSet ps) : ITensorSource
{
    private readonly Dictionary<string, int> _read = [];

    public IReadOnlyDictionary<string, int> DTypesRead => _read;

    public bool Contains(string name) => Resolve(name) is not null || BiasLayer(name) is not null;

    public WeightFormat StoredFormat(string name) => WeightFormat.F32;

    public Matrix ReadMatrix(string name, int rows, int cols, string why, WeightFormat format, bool inPlace)
    {
        Parameter p = Resolve(name) ?? throw new InvalidDataException($"no trainable tensor '{name}' ({why})");
        if (p.Rows != rows || p.Cols != cols)
            throw new InvalidDataException($"tensor '{name}' is [{p.Rows}, {p.Cols}]; expected [{rows}, {cols}] ({why})");
        if (format == WeightFormat.FP8) throw new ArgumentException($"tensor '{name}' is float32; it cannot be read as FP8", nameof(format));
        _read["F32"] = _read.GetValueOrDefault("F32") + 1;
        return Matrix.FromValues(rows, cols, ps.Value(p), format);
    }

    public float[] ReadVector(string name, int length, string why)
    {
        ReadOnlySpan<float> values = BiasLayer(name) is { } layer ? ps.RouterBias(layer)
            : Resolve(name) is { } p ? ps.Value(p) : throw new InvalidDataException($"no tensor '{name}' ({why})");
        if (values.Length != length) throw new InvalidDataException($"tensor '{name}' has {values.Length} values; expected {length} ({why})");
        _read["F32"] = _read.GetValueOrDefault("F32") + 1;
        return values.ToArray();
    }

    /// <summary>The parameter behind a name (the MTP copies of the embedding and head resolve to the main ones).</summary>
    private Parameter? Resolve(string name)
    {
        if (ps.Contains(name)) return ps[name];
        for (int k = 0; k < ps.Config.NMtpLayers; k++)
        {
            int l = ps.Config.NLayers + k;
            if (name == N.Layer(l, N.MtpEmbed)) return ps[N.Embed];
            if (name == N.Layer(l, N.MtpHead)) return ps.Config.TieWordEmbeddings ? ps[N.Embed] : ps[N.Head];
        }
        return null;
    }

    private int? BiasLayer(string name)
    {
        foreach (int layer in ps.BiasLayers)
            if (ps.BiasName(layer) == name) return layer;
        return null;
    }
}
