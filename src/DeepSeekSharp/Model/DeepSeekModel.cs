using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Model;

/// <summary>A loaded DeepSeek-V2/V3/R1 model. Thread-safe to share; each sequence runs in its own
/// <see cref="InferenceSession"/>.</summary>
/// <example><code>
/// var model = DeepSeekModel.Load("path/to/hf-folder");
/// using var session = model.CreateSession();
/// float[] logits = session.Forward([1, 2, 3]);   // [3, vocab]
/// </code></example>
public sealed class DeepSeekModel : IDisposable
{
    private readonly IDisposable? _files;

    private DeepSeekModel(string path, ModelConfig config, ModelWeights weights, IDisposable? files, LatentCacheFormat cacheFormat)
    {
        _files = files;
        CacheFormat = cacheFormat;
        Path = path;
        Config = config;
        Weights = weights;
        Transformer = new Transformer(config, weights);
    }

    public string Path { get; }
    public ModelConfig Config { get; }
    public ModelWeights Weights { get; }
    internal Transformer Transformer { get; }

    /// <summary>How sessions and batch slots of this model hold their latent caches (<see cref="LoadOptions.CacheFormat"/>).</summary>
    public LatentCacheFormat CacheFormat { get; }

    /// <summary>Number of multi-token-prediction modules whose weights were loaded.</summary>
    public int MtpLayers => Weights.Mtp.Length;

    /// <summary>Loads a Hugging Face folder (config.json + safetensors, single or sharded) or a deepseek2 GGUF file.
    /// Weights keep their stored format unless <see cref="LoadOptions.Quantize"/> says otherwise.</summary>
    public static DeepSeekModel Load(string path, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        if (File.Exists(path) && GgufFile.IsGguf(path)) return LoadGguf(path, options);
        if (!Directory.Exists(path))
            throw new DirectoryNotFoundException(path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)
                ? $"GGUF file '{path}' does not exist" : $"model folder '{path}' does not exist");
        ModelConfig config = HfConfig.Load(path);
        SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(path);
        try
        {
            var reader = new TensorReader(checkpoint, config.Fp8BlockSize ?? (128, 128));
            ModelWeights weights = new WeightLoader(config, reader, options).Load();
            if (options.MemoryMap) return new DeepSeekModel(path, config, weights, checkpoint, options.CacheFormat); // weights point into the files
            checkpoint.Dispose();
            return new DeepSeekModel(path, config, weights, null, options.CacheFormat);
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>A model whose weights come from any <see cref="ITensorSource"/> (Hugging Face names): a trainer's
    /// in-memory parameters, for instance, so that it can sample from the weights it is training without a
    /// checkpoint on disk. The weights are copied (or converted per <see cref="LoadOptions.Quantize"/>).</summary>
    public static DeepSeekModel FromSource(ModelConfig config, ITensorSource source, LoadOptions? options = null, string path = "(in memory)")
    {
        config.Validate();
        options ??= new LoadOptions();
        ModelWeights weights = new WeightLoader(config, source, options with { MemoryMap = false }).Load();
        return new DeepSeekModel(path, config, weights, null, options.CacheFormat);
    }

    private static DeepSeekModel LoadGguf(string path, LoadOptions options)
    {
        GgufCheckpoint gguf = GgufCheckpoint.Open(path);
        try
        {
            ModelConfig config = Deepseek2Gguf.ReadConfig(gguf);
            ModelWeights weights = new WeightLoader(config, new GgufTensorSource(gguf, config), options).Load();
            if (options.MemoryMap) return new DeepSeekModel(path, config, weights, gguf, options.CacheFormat);
            gguf.Dispose();
            return new DeepSeekModel(path, config, weights, null, options.CacheFormat);
        }
        catch
        {
            gguf.Dispose();
            throw;
        }
    }

    /// <summary>Bytes of weight data held (whatever their formats).</summary>
    public long WeightBytes => Weights.AllMatrices().Sum(m => m.Bytes);

    /// <summary>Frees the weights' native memory (and closes the files when memory-mapped).</summary>
    public void Dispose()
    {
        foreach (Matrix m in Weights.AllMatrices().Distinct()) m.Dispose();
        _files?.Dispose();
    }

    /// <summary>Default cache capacity: the context length, capped at 4096 positions.</summary>
    public int DefaultCapacity => Math.Min(Config.MaxPositionEmbeddings, 4096);

    /// <summary>A new sequence with an empty latent cache of <paramref name="capacity"/> positions.</summary>
    public InferenceSession CreateSession(int? capacity = null)
    {
        int cap = capacity ?? DefaultCapacity;
        if (cap < 1 || cap > Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(capacity), cap, $"cache capacity must be in [1, max_position_embeddings = {Config.MaxPositionEmbeddings}]");
        return new InferenceSession(this, cap);
    }

    private int _widestRow;

    /// <summary>Makes the per-thread scratch of products of up to <paramref name="tokens"/> tokens (decode steps) on
    /// every thread of the current pool, so that a decode step allocates nothing on any of them even when a worker's
    /// first product of some kind (an expert's, run inside its chunk) comes long after warm-up, as it can when the
    /// machine is loaded.</summary>
    internal void PreparePoolThreads(int tokens = 1)
    {
        if (_widestRow == 0) _widestRow = Weights.AllMatrices().Max(m => m.Cols);
        WorkerPool.Shared.RunOnEachThread(new PrepareThreadJob(tokens, _widestRow, Config));
    }

    private sealed class PrepareThreadJob(int tokens, int cols, ModelConfig c) : PoolJob
    {
        public override void Execute(int chunk)
        {
            Matrix.PrepareThisThread(tokens, cols);
            AbsorbedBlocks.PrepareThisThread(c.NHeads, c.KvLoraRank);
        }
    }
}
