using DeepSeekSharp.Linear;
using System.Buffers.Binary;
using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Model;

/// <summary>Writes Hugging Face checkpoints with random weights of sensible scale (linear weights with variance
/// 1/in so activations stay of order one; routers spread tokens over experts) for tests and benchmarks, since no
/// real weights can be downloaded here. Presets carry real DeepSeek shapes and the real DeepSeek-V3 vocabulary.</summary>
public static class RandomCheckpoint
{
    public static readonly string[] Presets = ["v2-lite", "v3", "v3-tiny", "v2-lite-tiny"];

    /// <summary>The config of a preset, cut to <paramref name="layers"/> layers when given.</summary>
    public static ModelConfig Preset(string name, int? layers = null)
    {
        var yarn40 = new YarnScaling(40, 4096, 32, 1, 1.0, 1.0);
        ModelConfig c = name switch
        {
            // DeepSeek-V2-Lite's shape with the DeepSeek-V3 tokenizer's vocabulary.
            "v2-lite" => new ModelConfig
            {
                ModelType = "deepseek_v2", VocabSize = 129280, Dim = 2048, InterDim = 10944, MoeInterDim = 1408, NLayers = 27, NDenseLayers = 1,
                NHeads = 16, NRoutedExperts = 64, NSharedExperts = 2, NActivatedExperts = 6, TopkMethod = TopkMethod.Greedy, ScoreFunc = ScoreFunc.Softmax,
                RouteScale = 1.0, KvLoraRank = 512, QkNopeHeadDim = 128, QkRopeHeadDim = 64, VHeadDim = 128,
                Yarn = yarn40 with { Mscale = 0.707, MscaleAllDim = 0.707 }, MaxPositionEmbeddings = 163840, BosTokenId = 0, EosTokenId = 1,
            },
            "v3" => new ModelConfig
            {
                ModelType = "deepseek_v3", VocabSize = 129280, Dim = 7168, InterDim = 18432, MoeInterDim = 2048, NLayers = 61, NDenseLayers = 3,
                NHeads = 128, NRoutedExperts = 256, NSharedExperts = 1, NActivatedExperts = 8, NExpertGroups = 8, NLimitedGroups = 4,
                TopkMethod = TopkMethod.NoAuxTc, ScoreFunc = ScoreFunc.Sigmoid, NormTopkProb = true, RouteScale = 2.5, QLoraRank = 1536,
                KvLoraRank = 512, QkNopeHeadDim = 128, QkRopeHeadDim = 64, VHeadDim = 128, Yarn = yarn40, MaxPositionEmbeddings = 163840,
                NMtpLayers = 1, BosTokenId = 0, EosTokenId = 1,
            },
            "v3-tiny" => new ModelConfig
            {
                ModelType = "deepseek_v3", VocabSize = 129280, Dim = 64, InterDim = 128, MoeInterDim = 32, NLayers = 2, NDenseLayers = 1,
                NHeads = 4, NRoutedExperts = 16, NSharedExperts = 1, NActivatedExperts = 4, NExpertGroups = 4, NLimitedGroups = 2,
                TopkMethod = TopkMethod.NoAuxTc, ScoreFunc = ScoreFunc.Sigmoid, NormTopkProb = true, RouteScale = 2.5, QLoraRank = 32,
                KvLoraRank = 32, QkNopeHeadDim = 16, QkRopeHeadDim = 16, VHeadDim = 16, Yarn = new YarnScaling(4, 1024, 32, 1, 1, 1),
                MaxPositionEmbeddings = 4096, NMtpLayers = 1, BosTokenId = 0, EosTokenId = 1,
            },
            "v2-lite-tiny" => new ModelConfig
            {
                ModelType = "deepseek_v2", VocabSize = 129280, Dim = 64, InterDim = 128, MoeInterDim = 32, NLayers = 2, NDenseLayers = 1,
                NHeads = 4, NRoutedExperts = 12, NSharedExperts = 2, NActivatedExperts = 3, TopkMethod = TopkMethod.Greedy, ScoreFunc = ScoreFunc.Softmax,
                RouteScale = 1.0, KvLoraRank = 32, QkNopeHeadDim = 16, QkRopeHeadDim = 8, VHeadDim = 12,
                Yarn = new YarnScaling(40, 1024, 32, 1, 0.707, 0.707), MaxPositionEmbeddings = 8192, BosTokenId = 0, EosTokenId = 1,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(name), name, $"unknown preset '{name}'; presets: {string.Join(", ", Presets)}"),
        };
        if (layers is { } n)
        {
            if (n < 1) throw new ArgumentOutOfRangeException(nameof(layers), n, "--layers must be ≥ 1");
            c = c with { NLayers = n, NDenseLayers = Math.Min(c.NDenseLayers, n) };
        }
        c.Validate();
        return c;
    }

    /// <summary>Writes config.json, sharded safetensors with an index, and the tokenizer files of
    /// <paramref name="tokenizerDir"/> (when given) into <paramref name="outDir"/>.</summary>
    /// <param name="progress">bytes written so far and in all</param>
    public static void Create(ModelConfig config, string outDir, WeightFormat dtype, ulong seed, string? tokenizerDir = null,
        IProgress<(long Done, long Total)>? progress = null, long maxShardBytes = 2L << 30)
    {
        if (dtype is not (WeightFormat.BF16 or WeightFormat.F32 or WeightFormat.F16 or WeightFormat.FP8))
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "--dtype must be bf16, f16, f32 or fp8");
        Directory.CreateDirectory(outDir);
        (int Rows, int Cols) block = config.Fp8BlockSize ?? (128, 128);
        // FP8 as DeepSeek ships V3: the projections inside the blocks in E4M3 with a float32 scale per 128 × 128 tile
        // (weight_scale_inv, right after its weight); embeddings, heads, norms and routers in BF16.
        bool IsFp8(TensorManifest.Entry e) => dtype == WeightFormat.FP8 && e.Role == TensorRole.Linear && e.Layer >= 0
            && e.Name != TensorNames.Hf.Head && !e.Name.EndsWith(TensorNames.Hf.MtpHead, StringComparison.Ordinal) && !e.Name.EndsWith(TensorNames.Hf.MtpEhProj, StringComparison.Ordinal);
        var entries = TensorManifest.For(config).SelectMany(e => IsFp8(e)
            ? new[] { e, e with { Name = TensorNames.Hf.ScaleInv(e.Name), Shape = [(e.Shape[0] + block.Rows - 1) / block.Rows, (e.Shape[1] + block.Cols - 1) / block.Cols], Role = TensorRole.Fp8Scale } }
            : [e]).ToList();
        WeightFormat TypeOf(TensorManifest.Entry e) =>
            e.Role is TensorRole.RouterBias or TensorRole.Fp8Scale ? WeightFormat.F32 : IsFp8(e) ? WeightFormat.FP8 : dtype == WeightFormat.FP8 ? WeightFormat.BF16 : dtype;
        long Bytes(TensorManifest.Entry e) => e.Shape.Aggregate(1L, (a, b) => a * b) * TypeOf(e).ElementBytes();

        // Cut into shards of at most maxShardBytes, at tensor boundaries.
        var shards = new List<List<TensorManifest.Entry>> { new() };
        long inShard = 0, total = 0;
        foreach (var e in entries)
        {
            if (inShard > 0 && inShard + Bytes(e) > maxShardBytes) { shards.Add([]); inShard = 0; }
            shards[^1].Add(e);
            inShard += Bytes(e);
            total += Bytes(e);
        }
        long done = 0;
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        float[]? scales = null; // an FP8 weight's block scales, written as the next tensor (which may open the next shard)
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            using var writer = new SafeTensorsWriter(Path.Combine(outDir, file), shards[s].Select(e => (e.Name, TypeOf(e), e.Shape)));
            foreach (var e in shards[s])
            {
                if (e.Role == TensorRole.Fp8Scale) WriteScales(writer, scales!, ref done);
                else if (TypeOf(e) == WeightFormat.FP8) scales = WriteRandomFp8(writer, e, block, seed, ref done, total, progress);
                else WriteRandom(writer, e, TypeOf(e), config, seed, ref done, total, progress);
                weightMap[e.Name] = file;
            }
            writer.Commit();
        }
        AtomicFile.WriteJson(Path.Combine(outDir, SafeTensorsCheckpoint.IndexFileName),
            new Dictionary<string, object> { ["metadata"] = new Dictionary<string, long> { ["total_size"] = total }, ["weight_map"] = weightMap });
        AtomicFile.WriteJson(Path.Combine(outDir, HfConfig.FileName), HfConfig.ToJsonObject(dtype == WeightFormat.FP8 ? config with { Fp8BlockSize = block } : config, dtype));
        if (tokenizerDir is not null)
            foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(outDir, f), overwrite: true);
    }

    /// <summary>Draws the weight's rows as for other dtypes and stores them as DeepSeek's <c>weight_quant</c> does: per
    /// tile, scale = max |w| / 448 and codes = E4M3(w / scale); returns the scales.</summary>
    private static float[] WriteRandomFp8(SafeTensorsWriter writer, TensorManifest.Entry e, (int Rows, int Cols) block, ulong seed,
        ref long done, long total, IProgress<(long, long)>? progress)
    {
        int rows = checked((int)e.Shape[0]), cols = checked((int)e.Shape[1]);
        int scaleCols = (cols + block.Cols - 1) / block.Cols;
        var scales = new float[(rows + block.Rows - 1) / block.Rows * scaleCols];
        var init = new RandomInit(e.Name, e.Role, cols, seed);
        var values = new float[block.Rows * cols];
        var codes = new byte[block.Rows * cols];
        for (int r0 = 0; r0 < rows; r0 += block.Rows)
        {
            int n = Math.Min(block.Rows, rows - r0);
            for (int r = 0; r < n; r++) init.Next(values.AsSpan(r * cols, cols));
            for (int b = 0; b < scaleCols; b++)
            {
                int c0 = b * block.Cols, c1 = Math.Min(cols, c0 + block.Cols);
                float amax = 0;
                for (int r = 0; r < n; r++)
                    for (int c = c0; c < c1; c++) amax = Math.Max(amax, Math.Abs(values[r * cols + c]));
                float scale = amax > 0 ? amax / 448f : 1f;
                scales[r0 / block.Rows * scaleCols + b] = scale;
                for (int r = 0; r < n; r++)
                    for (int c = c0; c < c1; c++) codes[r * cols + c] = NumberFormats.FloatToF8E4M3(values[r * cols + c] / scale);
            }
            writer.Write(codes.AsSpan(0, n * cols));
            done += n * cols;
            progress?.Report((done, total));
        }
        return scales;
    }

    private static void WriteScales(SafeTensorsWriter writer, float[] scales, ref long done)
    {
        var bytes = new byte[scales.Length * 4];
        for (int i = 0; i < scales.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), scales[i]);
        writer.Write(bytes);
        done += bytes.Length;
    }

    private static void WriteRandom(SafeTensorsWriter writer, TensorManifest.Entry e, WeightFormat type, ModelConfig c, ulong seed,
        ref long done, long total, IProgress<(long, long)>? progress)
    {
        long cols = e.Shape[^1], rows = e.Shape.Aggregate(1L, (a, b) => a * b) / Math.Max(cols, 1);
        var init = new RandomInit(e.Name, e.Role, cols, seed);
        var values = new float[cols];
        var bytes = new byte[cols * type.ElementBytes()];
        for (long r = 0; r < rows; r++)
        {
            init.Next(values);
            for (int i = 0; i < cols; i++)
            {
                switch (type)
                {
                    case WeightFormat.F32: BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]); break;
                    case WeightFormat.BF16: BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), NumberFormats.FloatToBF16(values[i])); break;
                    default: BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(i * 2), (Half)values[i]); break;
                }
            }
            writer.Write(bytes);
            done += bytes.Length;
            if ((r & 1023) == 0 || r == rows - 1) progress?.Report((done, total));
        }
    }
}

/// <summary>The random initial values of one tensor, drawn row after row: uniform in [−a, a] (standard deviation
/// a/√3) with standard deviation 1/√in for projections and routers and <c>embeddingStd</c> (1) for the embedding;
/// norms 1, router biases 0. The generator is seeded by the seed and a stable hash of the tensor's name, so a tensor
/// gets the same values whoever draws it (a checkpoint writer streaming rows, a trainer filling a buffer).</summary>
public sealed class RandomInit
{
    private readonly Rng _rng;
    private readonly TensorRole _role;
    private readonly double _a;

    public RandomInit(string name, TensorRole role, long cols, ulong seed, double embeddingStd = 1.0)
    {
        _role = role;
        double std = role switch
        {
            TensorRole.Embedding => embeddingStd,
            TensorRole.Linear or TensorRole.Router => 1.0 / Math.Sqrt(cols),
            _ => 0,
        };
        _a = std * Math.Sqrt(3);
        _rng = new Rng(seed ^ (ulong)StableHash(name));
    }

    /// <summary>Fills the next values (any number: a row, or a whole tensor at once gives the same values).</summary>
    public void Next(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++)
            values[i] = _role == TensorRole.Norm ? 1f : _role == TensorRole.RouterBias ? 0f : (float)((_rng.NextDouble() * 2 - 1) * _a);
    }

    private static int StableHash(string s)
    {
        unchecked
        {
            int h = (int)2166136261;
            foreach (char ch in s) h = (h ^ ch) * 16777619;
            return h;
        }
    }
}
