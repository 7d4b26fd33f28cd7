using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training;

/// <summary>One trainable tensor: a slice [Offset, Offset + Length) of the flat buffers, with its Hugging Face name and
/// shape ([rows, cols], or [length] for norms, which count as one row).</summary>
public sealed record Parameter(string Name, long[] Shape, long Offset, TensorRole Role, int Index)
{
    public int Rows => Shape.Length == 2 ? (int)Shape[0] : 1;
    public int Cols => (int)Shape[^1];
    public int Length => Rows * Cols;
    /// <summary>AdamW decays 2-D tensors (embedding, projections, experts, routers), not norms.</summary>
    public bool Decay => Shape.Length == 2;
}

/// <summary>Every trainable tensor of a model in one flat float32 buffer, with a gradient buffer of the same layout
/// (llm.c's <c>params_memory</c> / <c>grads_memory</c>), plus the routers' <c>e_score_correction_bias</c>, which is
/// state, not a parameter: the balance rule moves it, backprop never does. Names and order are the Hugging Face
/// checkpoint's (<see cref="TensorManifest"/>), without the MTP module's copies of the embedding and the head, which
/// are tied to the main ones while training and written back as copies.</summary>
public sealed class ParameterSet
{
    private readonly Dictionary<string, Parameter> _byName;
    private readonly Dictionary<int, float[]> _bias = [];

    public ParameterSet(ModelConfig config)
    {
        config.Validate();
        if (config.NMtpLayers > 1)
            throw new NotSupportedException($"num_nextn_predict_layers = {config.NMtpLayers}: training supports at most one MTP module (DeepSeek-V3 has one)");
        Config = config;
        var list = new List<Parameter>();
        long offset = 0;
        foreach (TensorManifest.Entry e in TensorManifest.For(config))
        {
            if (e.Role == TensorRole.RouterBias)
            {
                _bias[e.Layer] = new float[e.Shape[0]];
                continue;
            }
            if (e.Layer >= config.NLayers && (e.Name.EndsWith(Formats.TensorNames.Hf.MtpEmbed, StringComparison.Ordinal) ||
                                              e.Name.EndsWith(Formats.TensorNames.Hf.MtpHead, StringComparison.Ordinal)))
                continue; // tied to model.embed_tokens / lm_head
            var p = new Parameter(e.Name, e.Shape, offset, e.Role, list.Count);
            list.Add(p);
            offset += p.Length;
        }
        if (offset > Array.MaxLength)
            throw new NotSupportedException($"{offset:N0} parameters: the trainer holds them in one array of at most {Array.MaxLength:N0}");
        Tensors = list;
        _byName = list.ToDictionary(p => p.Name, StringComparer.Ordinal);
        Values = new float[offset];
        Grads = new float[offset];
        _transposed = new float[list.Count][];
        _transposedVersion = new int[list.Count];
    }

    private readonly float[][] _transposed;
    private readonly int[] _transposedVersion;

    /// <summary>Counts changes of <see cref="Values"/>; call <see cref="Changed"/> after writing them (the optimizer step
    /// does) so that cached transposes are rebuilt.</summary>
    public int Version { get; private set; } = 1;

    public void Changed() => Version++;

    /// <summary>Wᵀ [cols, rows] of a 2-D parameter, transposed once per <see cref="Version"/> (a linear layer's forward
    /// product reads it; see <see cref="Kernels.Gemm.ForwardTransposed"/>). Safe to call concurrently for different
    /// parameters.</summary>
    public ReadOnlySpan<float> Transposed(Parameter p)
    {
        float[] t = _transposed[p.Index] ??= new float[p.Length];
        if (_transposedVersion[p.Index] != Version)
        {
            Kernels.Transpose.Compute(Value(p), p.Rows, p.Cols, t);
            _transposedVersion[p.Index] = Version;
        }
        return t;
    }

    public ModelConfig Config { get; }
    public IReadOnlyList<Parameter> Tensors { get; }
    public float[] Values { get; }
    public float[] Grads { get; }
    public long Count => Values.LongLength;

    public Parameter this[string name] => _byName.TryGetValue(name, out Parameter? p) ? p
        : throw new KeyNotFoundException($"no trainable tensor '{name}'");

    public bool Contains(string name) => _byName.ContainsKey(name);

    public Span<float> Value(Parameter p) => Values.AsSpan((int)p.Offset, p.Length);
    public Span<float> Grad(Parameter p) => Grads.AsSpan((int)p.Offset, p.Length);

    /// <summary>Layers with a router bias (noaux_tc MoE layers, the MTP layer's included).</summary>
    public IEnumerable<int> BiasLayers => _bias.Keys.Order();

    /// <summary>The e_score_correction_bias of an MoE layer, or an empty span.</summary>
    public Span<float> RouterBias(int layer) => _bias.TryGetValue(layer, out float[]? b) ? b : Span<float>.Empty;

    public string BiasName(int layer) => Formats.TensorNames.Hf.Layer(layer, Formats.TensorNames.Hf.RouterBias);

    /// <summary>Fills the values from a Hugging Face checkpoint folder of this shape (any float storage type), naming
    /// every missing tensor or mismatched shape.</summary>
    public void Load(string directory)
    {
        using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(directory);
        foreach (Parameter p in Tensors) Read(checkpoint, p.Name, p.Shape, Value(p));
        foreach (int layer in BiasLayers) Read(checkpoint, BiasName(layer), [RouterBias(layer).Length], RouterBias(layer));
        Changed();
    }

    private static void Read(SafeTensorsCheckpoint checkpoint, string name, long[] shape, Span<float> destination)
    {
        var found = checkpoint.TryGet(name)
            ?? throw new InvalidDataException($"{checkpoint.Directory}: tensor '{name}' is missing (is the checkpoint of another model shape?)");
        if (!found.Info.Shape.SequenceEqual(shape))
            throw new InvalidDataException($"{checkpoint.Directory}: tensor '{name}' has shape {TensorInfo.FormatShape(found.Info.Shape)}, " +
                $"the training config needs {TensorInfo.FormatShape(shape)}");
        if (found.Info.Format is not (DeepSeekSharp.Linear.WeightFormat.F32 or DeepSeekSharp.Linear.WeightFormat.BF16 or DeepSeekSharp.Linear.WeightFormat.F16))
            throw new InvalidDataException($"{checkpoint.Directory}: tensor '{name}' is {found.Info.Format}; training starts from F32, BF16 or F16 weights");
        NumberFormats.ToFloat(found.Info.Format, found.File.GetBytes(found.Info), destination);
    }

    /// <summary>Random initial values as <see cref="RandomCheckpoint"/> draws them (<see cref="RandomInit"/>: uniform,
    /// variance 1/in for projections and routers, <paramref name="embeddingStd"/>² for the embedding), norms 1, biases 0.</summary>
    public void Initialize(ulong seed, double embeddingStd = 1.0)
    {
        foreach (Parameter p in Tensors) new RandomInit(p.Name, p.Role, p.Cols, seed, embeddingStd).Next(Value(p));
        foreach (int layer in BiasLayers) RouterBias(layer).Clear();
        Changed();
    }
}
