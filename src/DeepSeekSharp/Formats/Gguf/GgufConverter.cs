using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Text;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;
using K = DeepSeekSharp.Formats.TensorNames.GgufKeys;
using N = DeepSeekSharp.Formats.TensorNames.Hf;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>Converts a Hugging Face DeepSeek-V2/V3/R1 folder into a deepseek2 GGUF with the keys, tensor names,
/// layouts and alignment of llama.cpp's convert_hf_to_gguf.py (DeepseekV2Model): experts stacked per layer,
/// kv_b_proj split into attn_k_b (each head transposed) and attn_v_b, router and 1-D tensors in F32, MTP layers
/// left out, FP8 weights dequantised on the way. Types per tensor as llama-quantize chooses them
/// (<see cref="GgufTypeRules"/>), quantised as ggml quantises them. Written row by row to a temporary file, then
/// renamed.</summary>
public static class GgufConverter
{
    private sealed record Planned(string Name, long[] Dims, Action<Action<ReadOnlySpan<float>>> Rows);

    /// <summary>Converts a Hugging Face folder, or re-quantises a deepseek2 GGUF file (as llama-quantize does: the
    /// same metadata with the new file type, every tensor dequantised and written in the type the rules give).</summary>
    public static void Convert(string source, string outFile, GgufFileType type, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellationToken = default)
    {
        if (File.Exists(source) && GgufFile.IsGguf(source))
        {
            Requantize(source, outFile, type, progress, cancellationToken);
            return;
        }
        string hfDir = source;
        RefuseOverwritingInput(hfDir, outFile);
        ModelConfig c = HfConfig.Load(hfDir);
        if (c.MoeLayerFreq != 1)
            throw new NotSupportedException($"{HfConfig.FileName}: moe_layer_freq {c.MoeLayerFreq} cannot be expressed in a deepseek2 GGUF (llama.cpp assumes 1)");
        Tokenizer? tokenizer = File.Exists(Path.Combine(hfDir, "tokenizer.json")) ? Tokenizer.Load(hfDir) : null;
        using SafeTensorsCheckpoint ckpt = SafeTensorsCheckpoint.Open(hfDir);
        var reader = new TensorReader(ckpt, c.Fp8BlockSize ?? (128, 128));
        var meta = Deepseek2Gguf.Metadata(c, Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(hfDir))), type.Id);
        if (tokenizer is not null) meta.AddRange(Vocabulary(tokenizer, c.VocabSize));
        Write(outFile, meta, Plan(c, reader), type, c.NLayers, c.NRoutedExperts, c.NHeads, progress, cancellationToken); // head_count_kv 1: MQA over the latent
    }

    /// <summary><see cref="Convert(string, string, GgufFileType, IProgress{ValueTuple{int, int}}?, CancellationToken)"/>
    /// into the file type of tensors in <paramref name="format"/> (Q3_K, Q4_K and Q5_K as their S mixes).</summary>
    public static void Convert(string source, string outFile, WeightFormat format, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellationToken = default) =>
        Convert(source, outFile, GgufFileType.For(format), progress, cancellationToken);

    /// <summary>The output may not be one of the files the model is read from: the rename at the end would replace
    /// a checkpoint file with GGUF bytes while it is still mapped. A new .gguf inside the folder is fine.</summary>
    private static void RefuseOverwritingInput(string hfDir, string outFile)
    {
        string dir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(hfDir)), output = Path.GetFullPath(outFile);
        if (output == dir) throw new ArgumentException($"--out '{outFile}' is the model folder itself; name a .gguf file");
        if (Path.GetDirectoryName(output) == dir && (output.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || output.EndsWith(".json", StringComparison.OrdinalIgnoreCase)))
            throw new ArgumentException($"--out '{outFile}' is one of the input checkpoint's own files; writing it would destroy the input");
    }

    /// <summary>Writes the planned tensors in order, each in the type <see cref="GgufTypeRules"/> gives it in a
    /// <paramref name="type"/> file of <paramref name="layers"/> layers, <paramref name="experts"/> routed experts and
    /// <paramref name="gqa"/> heads per KV head.</summary>
    private static void Write(string outFile, List<KeyValuePair<string, GgufValue>> meta, List<Planned> plan, GgufFileType type, int layers, int experts,
        int gqa, IProgress<(int Done, int Total)>? progress, CancellationToken cancellationToken)
    {
        var rules = new GgufTypeRules(type, layers, experts, plan.Select(p => p.Name), gqa);
        GgmlType[] types = [.. plan.Select(p => rules.For(p.Name, p.Dims[0], p.Dims.Length))];
        string? dir = Path.GetDirectoryName(Path.GetFullPath(outFile));
        if (dir is not null) Directory.CreateDirectory(dir);
        // Any failure or cancellation disposes the writer uncommitted, which deletes OUT.tmp: nothing half-written stays.
        using var writer = new GgufWriter(outFile, meta, plan.Select((p, i) => (p.Name, types[i], p.Dims)));
        for (int i = 0; i < plan.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using (var batch = new RowBatch(types[i], writer, cancellationToken))
                plan[i].Rows(batch.Add);
            progress?.Report((i + 1, plan.Count));
        }
        writer.Commit();
    }

    private static void Requantize(string source, string outFile, GgufFileType type, IProgress<(int Done, int Total)>? progress,
        CancellationToken cancellationToken)
    {
        using GgufCheckpoint ck = GgufCheckpoint.Open(source);
        Deepseek2Gguf.ReadConfig(ck); // a deepseek2 model, or a clear error
        if (Path.GetFullPath(source) == Path.GetFullPath(outFile) || ck.Files.Any(f => Path.GetFullPath(f.Path) == Path.GetFullPath(outFile)))
            throw new ArgumentException($"--out must differ from the source files ('{source}')");
        var meta = ck.Main.Metadata.Where(kv => !kv.Key.StartsWith("split.", StringComparison.Ordinal) && kv.Key != K.FileType && kv.Key != GgufFile.AlignmentKey)
            .Append(new(K.FileType, GgufValue.U32(type.Id))).ToList();
        var plan = ck.Files.SelectMany(f => f.TensorList).Select(t => new Planned(t.Name, t.Dims, emit =>
            {
                GgufFile f = ck.FileOf(t);
                int cols = (int)t.Dims[0];
                long rows = t.ElementCount / cols, rowBytes = t.Type.Traits().RowBytes(cols);
                var raw = new byte[rowBytes];
                var row = new float[cols];
                for (long r = 0; r < rows; r++)
                {
                    f.ReadBytes(t, r * rowBytes, raw);
                    t.Type.Traits().Dequantize(raw, row);
                    emit(row);
                }
            })).ToList();
        int Key(string key) => (int)(ck.Main.Integer(K.Arch(key)) ?? 0);
        int heads = Key(K.HeadCount), kvHeads = Key(K.HeadCountKv) is > 0 and var kv ? kv : Math.Max(1, heads); // llama.cpp's default: one per head
        Write(outFile, meta, plan, type, Key(K.BlockCount), Key(K.ExpertCount), Math.Max(1, heads / kvHeads), progress, cancellationToken);
    }

    /// <summary>Collects rows and quantises them in parallel, 256 at a time, writing them in order.</summary>
    private sealed class RowBatch(GgmlType type, GgufWriter writer, CancellationToken cancellationToken) : IDisposable
    {
        private float[] _rows = [];
        private byte[] _bytes = [];
        private int _count, _cols;

        public void Add(ReadOnlySpan<float> row)
        {
            if (_count == 0) _cols = row.Length;
            if (_rows.Length < 256 * _cols) _rows = new float[256 * _cols];
            row.CopyTo(_rows.AsSpan(_count * _cols));
            if (++_count == 256) Flush();
        }

        private void Flush()
        {
            if (_count == 0) return;
            cancellationToken.ThrowIfCancellationRequested();
            int rowBytes = checked((int)type.Traits().RowBytes(_cols));
            if (_bytes.Length < _count * rowBytes) _bytes = new byte[256 * rowBytes];
            float[] rows = _rows;
            byte[] bytes = _bytes;
            int cols = _cols;
            Parallel.For(0, _count, r => type.Traits().Quantize(rows.AsSpan(r * cols, cols), bytes.AsSpan(r * rowBytes, rowBytes)));
            writer.Write(bytes.AsSpan(0, _count * rowBytes));
            _count = 0;
        }

        public void Dispose() => Flush();
    }

    private static List<Planned> Plan(ModelConfig c, TensorReader r)
    {
        var plan = new List<Planned>();
        void Add(string name, long[] dims, Action<Action<ReadOnlySpan<float>>> rows) => plan.Add(new Planned(name, dims, rows));
        Action<Action<ReadOnlySpan<float>>> MatrixRows(string hf, int rows, int cols) => emit =>
        {
            using Matrix m = r.ReadMatrix(hf, rows, cols, "shape from config.json");
            var row = new float[cols];
            for (int i = 0; i < rows; i++)
            {
                m.DequantizeRow(i, row);
                emit(row);
            }
        };
        foreach (TensorManifest.Entry e in TensorManifest.For(c))
        {
            if (e.Layer >= c.NLayers && e.Name is not (N.Norm or N.Head)) continue; // MTP modules, as llama.cpp
            var (name, expert) = G.FromHf(e.Name) ?? throw new InvalidOperationException($"no GGUF name for {e.Name}");
            if (e.Shape.Length == 1)
            {
                int n = (int)e.Shape[0];
                Add(name, [n], emit => emit(r.ReadVector(e.Name, n, "shape from config.json")));
                continue;
            }
            int rows = (int)e.Shape[0], cols = (int)e.Shape[1];
            if (expert > 0) continue; // stacked with expert 0
            if (expert == 0)
            {
                string hfOf(int x) => e.Name.Replace(N.Expert(0), N.Expert(x));
                Add(name, [cols, rows, c.NRoutedExperts], emit =>
                {
                    for (int x = 0; x < c.NRoutedExperts; x++) MatrixRows(hfOf(x), rows, cols)(emit);
                });
                continue;
            }
            if (name.EndsWith(G.AttnKvB, StringComparison.Ordinal))
            {
                string prefix = name[..^G.AttnKvB.Length];
                int nope = c.QkNopeHeadDim, v = c.VHeadDim, rank = c.KvLoraRank;
                Add(prefix + G.AttnKB, [nope, rank, c.NHeads], emit =>
                {
                    using Matrix kvb = r.ReadMatrix(e.Name, rows, cols, "shape from config.json");
                    var head = new float[nope * rank];
                    var row = new float[nope];
                    for (int h = 0; h < c.NHeads; h++)
                    {
                        for (int d = 0; d < nope; d++) kvb.DequantizeRow(h * (nope + v) + d, head.AsSpan(d * rank, rank));
                        for (int cc = 0; cc < rank; cc++)
                        {
                            for (int d = 0; d < nope; d++) row[d] = head[d * rank + cc];
                            emit(row);
                        }
                    }
                });
                Add(prefix + G.AttnVB, [rank, v, c.NHeads], emit =>
                {
                    using Matrix kvb = r.ReadMatrix(e.Name, rows, cols, "shape from config.json");
                    var row = new float[rank];
                    for (int h = 0; h < c.NHeads; h++)
                        for (int j = 0; j < v; j++)
                        {
                            kvb.DequantizeRow(h * (nope + v) + nope + j, row);
                            emit(row);
                        }
                });
                continue;
            }
            Add(name, [cols, rows], MatrixRows(e.Name, rows, cols));
        }
        return plan;
    }

    /// <summary>tokenizer.ggml.* as llama.cpp's converter writes a byte-level BPE vocabulary: every id up to the
    /// model's vocab_size (missing ones as [PADn], unused), added tokens as control (special, or looking special
    /// like &lt;｜…｜&gt;) or user-defined, merges in rank order.</summary>
    public static IEnumerable<KeyValuePair<string, GgufValue>> Vocabulary(Tokenizer t, int vocabSize)
    {
        const int Normal = 1, Control = 3, UserDefined = 4, Unused = 5;
        string pre = t.GgufPreName ?? throw new NotSupportedException("tokenizer.json: its pre-tokenizer is none llama.cpp knows for deepseek2 (deepseek-v3, deepseek-llm)");
        int n = Math.Max(vocabSize, t.VocabSize);
        var tokens = new string[n];
        var types = new int[n];
        for (int id = 0; id < n; id++)
        {
            string? text = t.TokenText(id);
            tokens[id] = text ?? $"[PAD{id}]";
            types[id] = text is null ? Unused
                : !t.IsAddedToken(id) ? Normal
                : t.IsSpecial(id) || LooksSpecial(text) ? Control : UserDefined;
        }
        yield return new(K.TokenizerModel, GgufValue.Str("gpt2"));
        yield return new(K.TokenizerPre, GgufValue.Str(pre));
        yield return new(K.Tokens, GgufValue.Strings(tokens));
        yield return new(K.TokenTypes, GgufValue.Ints(types));
        yield return new(K.Merges, GgufValue.Strings([.. t.MergeRules()]));
        if (t.BosId is { } bos) yield return new(K.BosId, GgufValue.U32((uint)bos));
        if (t.EosId is { } eos) yield return new(K.EosId, GgufValue.U32((uint)eos));
        if (t.Config.PadToken is { } pad && t.TryTokenToId(pad) is { } padId) yield return new(K.PadId, GgufValue.U32((uint)padId));
        yield return new(K.AddBos, GgufValue.Bool(t.Config.AddBosToken));
        yield return new(K.AddEos, GgufValue.Bool(t.Config.AddEosToken));
        if (t.Config.ChatTemplate is { } template) yield return new(K.ChatTemplate, GgufValue.Str(template));
    }

    /// <summary>llama.cpp's does_token_look_special for the shapes DeepSeek uses.</summary>
    private static bool LooksSpecial(string s) =>
        s.StartsWith("<|", StringComparison.Ordinal) && s.EndsWith("|>", StringComparison.Ordinal)
        || s.StartsWith("<｜", StringComparison.Ordinal) && s.EndsWith("｜>", StringComparison.Ordinal);
}
