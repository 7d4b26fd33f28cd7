using System.Runtime.InteropServices;
using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Linear;
using DeepSeekSharp.Model;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Training;

/// <summary>Where a run stood at a checkpoint, besides the weights and moments.</summary>
public sealed record TrainerState(int Step, int Epoch, int Position, long Tokens, string ConfigJson);

/// <summary>A training checkpoint: a complete Hugging Face model folder (config.json, model.safetensors in float32 with
/// the MTP module's copies of the embedding and head, the routers' e_score_correction_bias, the tokenizer files), which
/// <c>dss generate</c>, <c>chat</c> and <c>serve</c> load as it is, plus <c>optimizer.safetensors</c> (AdamW's moments)
/// and <c>trainer_state.json</c> for resuming. Each is written into <c>step-N.tmp/</c> and renamed to <c>step-N/</c>
/// only when complete; the <c>latest</c> file naming it is replaced atomically after that.</summary>
public static class Checkpoint
{
    public const string StateFile = "trainer_state.json", OptimizerFile = "optimizer.safetensors", LatestFile = "latest";

    /// <summary>Free bytes where a checkpoint goes (tests replace it to simulate a full disk).</summary>
    internal static Func<string, long> FreeBytes = dir => new DriveInfo(Path.GetFullPath(dir)).AvailableFreeSpace;

    /// <summary>The tensors of the model file: every parameter, the MTP copies of the tied embedding and head, the biases.</summary>
    private static List<(string Name, long[] Shape, Func<ReadOnlyMemory<float>> Values)> ModelTensors(ParameterSet ps)
    {
        ModelConfig c = ps.Config;
        var list = new List<(string, long[], Func<ReadOnlyMemory<float>>)>();
        foreach (Parameter p in ps.Tensors) list.Add((p.Name, p.Shape, () => ps.Values.AsMemory((int)p.Offset, p.Length)));
        for (int k = 0; k < c.NMtpLayers; k++)
        {
            int l = c.NLayers + k;
            Parameter embed = ps[N.Embed], head = c.TieWordEmbeddings ? embed : ps[N.Head];
            list.Add((N.Layer(l, N.MtpEmbed), embed.Shape, () => ps.Values.AsMemory((int)embed.Offset, embed.Length)));
            list.Add((N.Layer(l, N.MtpHead), head.Shape, () => ps.Values.AsMemory((int)head.Offset, head.Length)));
        }
        foreach (int layer in ps.BiasLayers)
        {
            int l = layer;
            list.Add((ps.BiasName(l), [ps.RouterBias(l).Length], () => ps.RouterBias(l).ToArray()));
        }
        return [.. list.OrderBy(t => t.Item1, StringComparer.Ordinal)];
    }

    /// <summary>Writes checkpoint <c>step-N</c> under <paramref name="dir"/> and points <c>latest</c> at it; keeps the
    /// newest <paramref name="keep"/>. On any failure the partial folder is removed and the previous checkpoint stays.</summary>
    public static string Save(string dir, ParameterSet ps, float[] m, float[] v, TrainerState state, string? tokenizerDir, int keep)
    {
        Directory.CreateDirectory(dir);
        string name = $"step-{state.Step:D6}", final = Path.Combine(dir, name), temp = final + ".tmp";
        long needed = (ps.Count * 3 + 1024) * 4 + (ps.Config.NMtpLayers > 0 ? 2L * ps.Config.VocabSize * ps.Config.Dim * 4 : 0);
        long free = FreeBytes(dir);
        if (free < needed)
            throw new IOException($"checkpoint {name}: needs {needed:N0} bytes, {free:N0} free in {dir}; nothing was written (the previous checkpoint is intact)");
        try
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, true);
            Directory.CreateDirectory(temp);
            WriteTensors(Path.Combine(temp, SafeTensorsCheckpoint.SingleFileName), ModelTensors(ps));
            WriteTensors(Path.Combine(temp, OptimizerFile),
                [("exp_avg", [m.LongLength], () => m), ("exp_avg_sq", [v.LongLength], () => v)]);
            AtomicFile.WriteJson(Path.Combine(temp, HfConfig.FileName), HfConfig.ToJsonObject(ps.Config, WeightFormat.F32));
            AtomicFile.WriteJson(Path.Combine(temp, StateFile), state);
            if (tokenizerDir is not null)
                foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" })
                    if (File.Exists(Path.Combine(tokenizerDir, f))) File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(temp, f), overwrite: true);
            if (Directory.Exists(final)) Directory.Delete(final, true);
            Directory.Move(temp, final);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, true); } catch (IOException) { }
            throw new IOException($"checkpoint {name} could not be written ({e.Message}); the previous checkpoint is intact", e);
        }
        AtomicFile.WriteText(Path.Combine(dir, LatestFile), name);
        foreach (string old in Directory.GetDirectories(dir, "step-*").Where(d => !d.EndsWith(".tmp", StringComparison.Ordinal))
                     .Order(StringComparer.Ordinal).SkipLast(keep))
            Directory.Delete(old, true);
        return final;
    }

    /// <summary>The newest complete checkpoint under <paramref name="dir"/>, or null.</summary>
    public static string? Latest(string dir)
    {
        string pointer = Path.Combine(dir, LatestFile);
        if (File.Exists(pointer))
        {
            string named = Path.Combine(dir, File.ReadAllText(pointer).Trim());
            if (Directory.Exists(named)) return named;
        }
        return Directory.Exists(dir)
            ? Directory.GetDirectories(dir, "step-*").Where(d => !d.EndsWith(".tmp", StringComparison.Ordinal)).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
    }

    /// <summary>Loads weights, biases, moments and state from a checkpoint written by <see cref="Save"/>, checking that it
    /// has this run's shape.</summary>
    public static TrainerState Load(string checkpoint, ParameterSet ps, float[] m, float[] v)
    {
        ModelConfig theirs = HfConfig.Load(checkpoint);
        Dictionary<string, object?> mine = HfConfig.ToJsonObject(ps.Config, WeightFormat.F32);
        if (HfConfig.ToJsonObject(theirs, WeightFormat.F32).Where(p => p.Key != "torch_dtype").Any(p => !JsonEquals(p.Value, mine.GetValueOrDefault(p.Key))))
            throw new InvalidDataException($"{checkpoint}: the checkpoint is of another model shape than this run's config ({Describe(theirs)} vs {Describe(ps.Config)})");
        ps.Load(checkpoint);
        using (SafeTensorsFile opt = SafeTensorsFile.Open(Path.Combine(checkpoint, OptimizerFile)))
        {
            ReadFlat(opt, "exp_avg", m);
            ReadFlat(opt, "exp_avg_sq", v);
        }
        string statePath = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(statePath)) throw new FileNotFoundException($"{checkpoint}: no {StateFile}; not a training checkpoint");
        return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath))
               ?? throw new InvalidDataException($"{statePath}: empty");
    }

    private static string Describe(ModelConfig c) => $"hidden_size {c.Dim}, {c.NLayers} layers, vocab {c.VocabSize}, {c.NRoutedExperts} experts";

    private static bool JsonEquals(object? a, object? b) => JsonSerializer.Serialize(a) == JsonSerializer.Serialize(b);

    private static void ReadFlat(SafeTensorsFile f, string name, float[] into)
    {
        if (!f.Tensors.TryGetValue(name, out TensorInfo? info) || info.Format != WeightFormat.F32 || info.ElementCount != into.LongLength)
            throw new InvalidDataException($"{f.Path}: '{name}' is missing or not F32 [{into.LongLength}]");
        MemoryMarshal.Cast<byte, float>(f.GetBytes(info)).CopyTo(into);
    }

    private static void WriteTensors(string path, List<(string Name, long[] Shape, Func<ReadOnlyMemory<float>> Values)> tensors, bool bf16Matrices = false)
    {
        WeightFormat Format(long[] shape) => bf16Matrices && shape.Length == 2 ? WeightFormat.BF16 : WeightFormat.F32;
        using var writer = new SafeTensorsWriter(path, tensors.Select(t => (t.Name, Format(t.Shape), t.Shape)));
        foreach (var t in tensors)
        {
            ReadOnlySpan<float> values = t.Values().Span;
            if (Format(t.Shape) == WeightFormat.F32) { writer.Write(MemoryMarshal.AsBytes(values)); continue; }
            var half = new ushort[values.Length];
            for (int i = 0; i < values.Length; i++) half[i] = ToBf16(values[i]);
            writer.Write(MemoryMarshal.AsBytes(half.AsSpan()));
        }
        writer.Commit();
    }

    /// <summary>Round to nearest even (what PyTorch's <c>.to(torch.bfloat16)</c> does); NaN stays NaN.</summary>
    internal static ushort ToBf16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>A model folder for inference (no optimizer state): config.json, model.safetensors with the matrices in
    /// BF16 (as DeepSeek ships its checkpoints; norms and router biases stay float32), and the tokenizer files.</summary>
    public static void ExportModel(ParameterSet ps, string dir, string? tokenizerDir)
    {
        Directory.CreateDirectory(dir);
        WriteTensors(Path.Combine(dir, SafeTensorsCheckpoint.SingleFileName), ModelTensors(ps), bf16Matrices: true);
        AtomicFile.WriteJson(Path.Combine(dir, HfConfig.FileName), HfConfig.ToJsonObject(ps.Config, WeightFormat.BF16));
        if (tokenizerDir is not null)
            foreach (string f in new[] { "tokenizer.json", "tokenizer_config.json" })
                if (File.Exists(Path.Combine(tokenizerDir, f))) File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(dir, f), overwrite: true);
    }
}
