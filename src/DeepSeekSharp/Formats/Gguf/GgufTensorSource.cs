using DeepSeekSharp.Linear;
using DeepSeekSharp.Kernels;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;

namespace DeepSeekSharp.Formats.Gguf;

/// <summary>The tensors of a deepseek2 GGUF file under their Hugging Face names, so the same
/// <see cref="WeightLoader"/> builds the model: routed experts are row ranges of the stacked <c>*_exps</c> tensors;
/// kv_b_proj is <c>attn_kv_b</c> in older files and is reassembled from <c>attn_k_b</c> (transposed per head) and
/// <c>attn_v_b</c> in newer ones, whose <c>attn_k_b</c> is used directly as the absorbed-attention W_UK.
/// Blocks in a format the options keep are used from the mapped file or copied byte for byte; others are
/// dequantised row by row and converted.</summary>
public sealed unsafe class GgufTensorSource(GgufCheckpoint ck, ModelConfig c) : ITensorSource
{
    private readonly Dictionary<string, int> _dtypes = new(StringComparer.Ordinal);

    public IReadOnlyDictionary<string, int> DTypesRead => _dtypes;

    private (GgufTensorInfo Info, int Expert)? Locate(string hf) =>
        G.FromHf(hf) is var (name, expert) && ck.Tensors.TryGetValue(name, out GgufTensorInfo? info) ? (info, expert) : null;

    private static bool IsKvB(string hf) => hf.EndsWith(TensorNames.Hf.WkvB, StringComparison.Ordinal);

    private (GgufTensorInfo K, GgufTensorInfo V)? SplitKvB(string hf)
    {
        if (!IsKvB(hf) || G.FromHf(hf) is not var (kvb, _)) return null;
        string prefix = kvb[..^G.AttnKvB.Length];
        return ck.Tensors.TryGetValue(prefix + G.AttnKB, out GgufTensorInfo? k) && ck.Tensors.TryGetValue(prefix + G.AttnVB, out GgufTensorInfo? v)
            ? (k, v) : null;
    }

    public bool Contains(string name) => Locate(name) is not null || SplitKvB(name) is not null;

    public WeightFormat StoredFormat(string name)
    {
        if (Locate(name) is var (info, _)) return info.Type.Traits().Format;
        if (SplitKvB(name) is var (_, v) && v.Type.Traits().CanHold(c.KvLoraRank)) return v.Type.Traits().Format;
        return WeightFormat.F32;
    }

    private InvalidDataException MissingTensor(string hf, string why) =>
        new($"{ck.Main.FileName}: tensor '{(G.FromHf(hf) is var (n, _) ? n : hf)}' ({hf}) is missing ({why})");

    private void Check(GgufTensorInfo info, long[] dims, string why)
    {
        if (!info.Dims.AsSpan().SequenceEqual(dims))
            throw new InvalidDataException($"{ck.Main.FileName}: tensor '{info.Name}' has dims {info.FormatDims()}; expected [{string.Join(", ", dims)}] ({why}; ggml order, row length first)");
        string key = GgmlBlocks.Name(info.Type);
        _dtypes[key] = _dtypes.GetValueOrDefault(key) + 1;
    }

    public Matrix ReadMatrix(string name, int rows, int cols, string why, WeightFormat format, bool inPlace)
    {
        if (Locate(name) is not var (info, expert))
            return SplitKvB(name) is var (k, v) ? JoinKvB(k, v, rows, cols, format) : throw MissingTensor(name, why);
        long[] dims = expert >= 0 ? [cols, rows, c.NRoutedExperts]
            : name.EndsWith(TensorNames.Hf.WkT, StringComparison.Ordinal) ? [cols, c.KvLoraRank, c.NHeads] // stored per head
            : [cols, rows];
        Check(info, dims, expert < 0 ? why : why + $", x n_routed_experts {c.NRoutedExperts}");
        long rowBytes = info.Type.Traits().RowBytes(cols);
        return Rows(info, Math.Max(expert, 0) * rows * rowBytes, rows, cols, format, inPlace);
    }

    /// <summary>Rows [0, rows) of a tensor starting <paramref name="byteOffset"/> into its data: used in the mapped
    /// file, read straight into the matrix's memory (same format), or read and converted in parallel.</summary>
    private Matrix Rows(GgufTensorInfo info, long byteOffset, int rows, int cols, WeightFormat format, bool inPlace)
    {
        FormatTraits stored = info.Type.Traits();
        long rowBytes = stored.RowBytes(cols);
        int rowsPerRead = (int)Math.Clamp((1 << 26) / Math.Max(rowBytes, 1), 1, rows == 0 ? 1 : rows);
        if (format == stored.Format)
        {
            if (inPlace) return Matrix.Wrap(format, rows, cols, ck.FileOf(info).DataPointer(info) + byteOffset, owner: null);
            Matrix copy = Matrix.Create(format, rows, cols);
            for (int r = 0; r < rows; r += rowsPerRead)
            {
                int n = Math.Min(rowsPerRead, rows - r);
                copy.ReadStoredRows(r, n, span => ck.FileOf(info).ReadBytes(info, byteOffset + r * rowBytes, span));
            }
            return copy;
        }
        Matrix m = Matrix.Create(format, rows, cols);
        RowTasks.Convert(m, rowBytes, (r0, raw) => ck.FileOf(info).ReadBytes(info, byteOffset + r0 * rowBytes, raw),
            (raw, _, row) => stored.Dequantize(raw, row));
        return m;
    }

    /// <summary>kv_b_proj [heads·(nope + v), rank] from attn_k_b [heads][rank][nope] and attn_v_b [heads][v][rank].</summary>
    private Matrix JoinKvB(GgufTensorInfo k, GgufTensorInfo v, int rows, int cols, WeightFormat format)
    {
        int nope = c.QkNopeHeadDim, vd = c.VHeadDim, rank = c.KvLoraRank;
        Check(k, [nope, rank, c.NHeads], $"qk_nope_head_dim {nope} x kv_lora_rank {rank} x heads {c.NHeads}");
        Check(v, [rank, vd, c.NHeads], $"kv_lora_rank {rank} x v_head_dim {vd} x heads {c.NHeads}");
        if (rows != c.NHeads * (nope + vd) || cols != rank) throw new ArgumentException("kv_b_proj shape does not match the config");
        Matrix m = Matrix.Create(format, rows, cols);
        long kRow = k.Type.Traits().RowBytes(nope), vRow = v.Type.Traits().RowBytes(rank);
        var kh = new float[rank * nope]; // [rank, nope] as stored
        var khT = new float[nope * rank]; // [nope, rank] as kv_b_proj holds it
        var row = new float[rank];
        for (int h = 0; h < c.NHeads; h++)
        {
            for (int cc = 0; cc < rank; cc++)
                k.Type.Traits().Dequantize(ck.FileOf(k).Bytes(k, (h * rank + cc) * kRow, (int)kRow), kh.AsSpan(cc * nope, nope));
            Transpose.Compute(kh, rank, nope, khT);
            for (int d = 0; d < nope; d++) m.SetRow(h * (nope + vd) + d, khT.AsSpan(d * rank, rank));
            for (int j = 0; j < vd; j++)
            {
                v.Type.Traits().Dequantize(ck.FileOf(v).Bytes(v, (h * vd + j) * vRow, (int)vRow), row);
                m.SetRow(h * (nope + vd) + nope + j, row);
            }
        }
        return m;
    }

    public float[] ReadVector(string name, int length, string why)
    {
        if (Locate(name) is not var (info, _)) throw MissingTensor(name, why);
        Check(info, [length], why);
        var v = new float[length];
        info.Type.Traits().Dequantize(ck.FileOf(info).Bytes(info, 0, (int)info.Bytes), v);
        return v;
    }
}
