using DeepSeekSharp.Linear;
using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using Xunit.Abstractions;
using G = DeepSeekSharp.Formats.TensorNames.Gguf;

namespace DeepSeekSharp.Tests.Formats;

/// <summary>Golden checkpoints converted to GGUF and run from it: f32 must give the safetensors logits; the
/// quantised types stay within stated bounds of them.</summary>
public class GgufModelTests(ITestOutputHelper output)
{
    private static readonly Dictionary<(string, WeightFormat), string> Converted = new();

    /// <summary>The golden case converted once per test run.</summary>
    internal static string Convert(string name, WeightFormat type)
    {
        lock (Converted)
        {
            if (Converted.TryGetValue((name, type), out string? path)) return path;
            path = Path.Combine(TestScratch.Root, $"dss-gguf-{Guid.NewGuid():N}-{name}-{type}.gguf");
            GgufConverter.Convert(GoldenCase.Load(name).Directory, path, type);
            return Converted[(name, type)] = path;
        }
    }

    private static float[] Logits(DeepSeekModel m, int[] ids)
    {
        using InferenceSession s = m.CreateSession(ids.Length + 1);
        return s.Forward(ids);
    }

    public static TheoryData<string> Cases => new(GoldenCase.All);

    [Theory]
    [MemberData(nameof(Cases))]
    public void F32Gguf_GivesTheSafetensorsLogits_AndTheGoldenOnes(string name)
    {
        GoldenCase g = GoldenCase.Load(name);
        using DeepSeekModel hf = DeepSeekModel.Load(g.Directory);
        using DeepSeekModel gguf = DeepSeekModel.Load(Convert(name, WeightFormat.F32));
        Assert.Equal(hf.Config with { NMtpLayers = 0, MoeLayerFreq = 1, TorchDtype = null, Fp8BlockSize = null, RmsNormEps = gguf.Config.RmsNormEps,
            Yarn = gguf.Config.Yarn, BosTokenId = null, EosTokenId = null }, gguf.Config with { BosTokenId = null, EosTokenId = null });
        float[] a = Logits(hf, g.PromptIds), b = Logits(gguf, g.PromptIds);
        Compare.Close(b, a, 1e-5, $"{name}: gguf f32 vs safetensors");
        int v = hf.Config.VocabSize;
        for (int p = 0; p < g.PromptIds.Length; p++)
            Compare.Close(b.AsSpan(p * v, v), g.PerPositionLogits[p], 1e-4, $"{name}: gguf f32 vs golden at {p}");
    }

    [Fact]
    public void F32Gguf_DecodesLikeTheGolden_AbsorbedAttentionUsesAttnKB()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        using DeepSeekModel gguf = DeepSeekModel.Load(Convert("v3-tiny", WeightFormat.F32));
        using InferenceSession s = gguf.CreateSession(64);
        s.Forward(g.PromptIds);
        foreach (var (input, _, logits) in g.Decode)
            Compare.Close(s.Forward([input]), logits, 1e-4, "decode step from gguf");
    }

    // Golden models: measured max over the prompt's 12 positions of max|Δ|/max|ref| against the f32 GGUF, with
    // margin, and top-1 agreement. These tiny MoE models have rows of 48–320 values, so k-quant tensors mostly fall
    // back (q4_k → Q5_0, q6_k → Q8_0) as llama.cpp's do, and a quantisation error that flips one routing decision
    // moves a position's logits by tens of percent (v3-tiny q8_0: 41% at one position, the top token unchanged):
    // F16 3.4e-7, BF16 5.9e-7 (the golden weights are bf16 values); see DenseModel below for tight bounds.
    [Theory]
    [InlineData("v3-tiny", WeightFormat.F16, 1e-5, 12)]
    [InlineData("v3-tiny", WeightFormat.BF16, 1e-5, 12)]
    [InlineData("v3-tiny", WeightFormat.Q8_0, 0.6, 10)] // 11 while Q8_0 rounded halves to even (ggml: away from zero)
    [InlineData("v3-tiny", WeightFormat.Q4_K, 0.8, 9)]
    [InlineData("v2-lite-tiny", WeightFormat.Q8_0, 0.04, 12)]
    [InlineData("v2-lite-tiny", WeightFormat.Q4_K, 0.2, 10)]
    [InlineData("v3-fp8-tiny", WeightFormat.Q8_0, 0.06, 12)]
    [InlineData("v3-fp8-tiny", WeightFormat.Q4_K, 0.5, 7)]
    public void QuantisedGguf_StaysNearTheF32Logits(string name, WeightFormat type, double bound, int minTop1)
    {
        GoldenCase g = GoldenCase.Load(name);
        using DeepSeekModel f32 = DeepSeekModel.Load(Convert(name, WeightFormat.F32));
        using DeepSeekModel q = DeepSeekModel.Load(Convert(name, type));
        var (worst, top1) = Measure(f32, q, g.PromptIds);
        output.WriteLine($"{name} {type}: max rel {worst:E2}, top-1 {top1}/{g.PromptIds.Length}; types {string.Join(", ", q.Weights.DTypes.Select(kv => $"{kv.Key}×{kv.Value}"))}");
        Assert.True(worst < bound, $"{name} {type}: max rel {worst:E2} ≥ {bound:E1}");
        Assert.True(top1 >= minTop1, $"{name} {type}: top-1 agreement {top1} < {minTop1}");
    }

    private static (double MaxRel, int Top1) Measure(DeepSeekModel reference, DeepSeekModel q, int[] prompt)
    {
        float[] a = Logits(reference, prompt), b = Logits(q, prompt);
        int v = reference.Config.VocabSize, top1 = 0;
        double worst = 0;
        for (int p = 0; p < prompt.Length; p++)
        {
            worst = Math.Max(worst, Compare.MaxRelative(b.AsSpan(p * v, v), a.AsSpan(p * v, v)));
            if (ArgMax(a.AsSpan(p * v, v)) == ArgMax(b.AsSpan(p * v, v))) top1++;
        }
        return (worst, top1);
    }

    // Measured on this model (q8_0 2.6%, q6_k 4.9%, q5_k 11%, q4_k 16%, q4_0 26% of max|logit|; top-1 8/8, 8/8, 7/8, 6/8, 7/8); bounds with margin.
    [Theory]
    [InlineData(WeightFormat.Q8_0, GgmlType.Q8_0, 0.03)]
    [InlineData(WeightFormat.Q6_K, GgmlType.Q6_K, 0.12)]
    [InlineData(WeightFormat.Q5_K, GgmlType.Q5_K, 0.2)]
    [InlineData(WeightFormat.Q4_K, GgmlType.Q4_K, 0.4)]
    [InlineData(WeightFormat.Q4_0, GgmlType.Q4_0, 0.4)]
    public void DenseModel_QuantisedGguf_StaysNearF32_WithRealKQuantTensors(WeightFormat type, GgmlType main, double bound)
    {
        string dir = RandomModel.Dense(11);
        string path = Path.Combine(TestScratch.Root, $"dss-gguf-dense-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufConverter.Convert(dir, path, type);
            using DeepSeekModel f32 = DeepSeekModel.Load(dir);
            using DeepSeekModel q = DeepSeekModel.Load(path);
            Assert.True(q.Weights.DTypes.GetValueOrDefault(main.ToString()) > 0, $"no {main} tensors in the file");
            int[] prompt = [1, 17, 256, 999, 42, 7, 300, 5];
            var (worst, top1) = Measure(f32, q, prompt);
            output.WriteLine($"dense {type}: max rel {worst:E2}, top-1 {top1}/{prompt.Length}; types {string.Join(", ", q.Weights.DTypes.Select(kv => $"{kv.Key}×{kv.Value}"))}");
            Assert.True(worst < bound, $"dense {type}: max rel {worst:E2} ≥ {bound:E1}");
        }
        finally { File.Delete(path); }
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    [Fact]
    public void Conversion_WritesLlamaCppKeysNamesAndLayouts()
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        using var f = GgufFile.Open(Convert("v3-tiny", WeightFormat.Q8_0));
        using DeepSeekModel hf = DeepSeekModel.Load(g.Directory);
        ModelConfig c = hf.Config;
        Assert.Equal(3u, f.Version);
        Assert.Equal("deepseek2", f.String("general.architecture"));
        Assert.Equal(7, f.Integer("general.file_type"));
        Assert.Equal(c.NLayers, f.Integer("deepseek2.block_count"));
        Assert.Equal(1, f.Integer("deepseek2.attention.head_count_kv"));
        Assert.Equal(c.KvLoraRank + c.QkRopeHeadDim, f.Integer("deepseek2.attention.key_length"));
        Assert.Equal(c.KvLoraRank, f.Integer("deepseek2.attention.value_length"));
        Assert.Equal(c.QkNopeHeadDim + c.QkRopeHeadDim, f.Integer("deepseek2.attention.key_length_mla"));
        Assert.Equal(c.VHeadDim, f.Integer("deepseek2.attention.value_length_mla"));
        Assert.Equal(2, f.Integer("deepseek2.expert_gating_func"));
        Assert.Equal(2.5, f.Number("deepseek2.expert_weights_scale"));
        Assert.True(f.Flag("deepseek2.expert_weights_norm"));
        Assert.Equal("yarn", f.String("deepseek2.rope.scaling.type"));
        Assert.Equal(0.1f * 1.0f, (float)f.Number("deepseek2.rope.scaling.yarn_log_multiplier")!.Value);
        // stacked experts [in, out, n_expert]; k_b transposed per head; v_b as is; router in f32
        int l = c.NDenseLayers;
        Assert.Equal([c.Dim, c.MoeInterDim, c.NRoutedExperts], f.Tensors[G.Block(l, G.FfnGateExps)].Dims);
        Assert.Equal([c.MoeInterDim, c.Dim, c.NRoutedExperts], f.Tensors[G.Block(l, G.FfnDownExps)].Dims);
        Assert.Equal([c.QkNopeHeadDim, c.KvLoraRank, c.NHeads], f.Tensors[G.Block(0, G.AttnKB)].Dims);
        Assert.Equal([c.KvLoraRank, c.VHeadDim, c.NHeads], f.Tensors[G.Block(0, G.AttnVB)].Dims);
        Assert.False(f.Tensors.ContainsKey(G.Block(0, G.AttnKvB)));
        Assert.Equal(GgmlType.F32, f.Tensors[G.Block(l, G.FfnGateInp)].Type);
        Assert.Equal(GgmlType.F32, f.Tensors[G.Block(l, G.ExpProbsB)].Type);
        Assert.Equal(GgmlType.F32, f.Tensors[G.Block(0, G.AttnNorm)].Type);
        Assert.Equal(GgmlType.Q8_0, f.Tensors[G.Block(0, G.AttnOutput)].Type);
        Assert.DoesNotContain(f.TensorList, t => t.Name.StartsWith($"blk.{c.NLayers}.", StringComparison.Ordinal)); // no MTP, as llama.cpp
        Assert.All(f.TensorList, t => Assert.Equal(0, t.Offset % 32));

        // The stacked expert tensor holds expert e's rows at e·rows: compare one expert with the safetensors one.
        GgufTensorInfo up = f.Tensors[G.Block(l, G.FfnUpExps)];
        long rowBytes = up.Type.Traits().RowBytes(c.Dim);
        var fromGguf = new float[c.Dim];
        var fromHf = new float[c.Dim];
        int expert = c.NRoutedExperts - 1, row = 3;
        up.Type.Traits().Dequantize(f.Bytes(up, ((long)expert * c.MoeInterDim + row) * rowBytes, (int)rowBytes), fromGguf);
        ((MoeWeights)hf.Weights.Blocks[l].Ffn).Experts[expert].Up.DequantizeRow(row, fromHf);
        for (int i = 0; i < c.Dim; i++) Assert.Equal(fromHf[i], fromGguf[i], Math.Abs(fromHf[i]) / 100 + 1e-3);
    }

    /// <summary>q4_0 as llama-quantize makes it (LLAMA_FTYPE_MOSTLY_Q4_0): file type 2, the output matrix in Q6_K,
    /// every other matrix (the token embedding included) in Q4_0, norms and routers in F32; a row that does not
    /// divide into blocks of 32 in F16.</summary>
    [Fact]
    public void Q4_0Conversion_KeepsTheOutputInQ6K_AsLlamaQuantizeDoes()
    {
        string path = Path.Combine(TestScratch.Root, $"dss-gguf-q4_0-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufConverter.Convert(RandomModel.Dense(11), path, WeightFormat.Q4_0);
            using var f = GgufFile.Open(path);
            Assert.Equal(2, f.Integer("general.file_type"));
            Assert.Equal(GgmlType.Q6_K, f.Tensors[G.Output].Type);
            Assert.Equal(GgmlType.Q4_0, f.Tensors[G.TokenEmbd].Type);
            Assert.Equal(GgmlType.Q4_0, f.Tensors[G.Block(0, G.AttnOutput)].Type);
            Assert.Equal(GgmlType.Q4_0, f.Tensors[G.Block(1, G.FfnDown)].Type);
            Assert.Equal(GgmlType.F32, f.Tensors[G.Block(0, G.AttnNorm)].Type);
            Assert.Equal(GgmlType.F16, new GgufTypeRules(GgufFileType.Q4_0, 2, 0, []).For(G.Block(0, G.AttnOutput), 48, 2));
        }
        finally { File.Delete(path); }
    }

    /// <summary>The types llama-quantize's llama_tensor_get_type gives without an importance matrix (llama-quant.cpp):
    /// Q2_K and the Q3_K mixes as spelled out below (ffn_down, attn_output and attn_v-like tensors with more bits, Q2_K's
    /// and Q3_K's fallback Q4_0); Q4_K_S puts ffn_down of the first eighth of the layers and the first four attn_v-like tensors in Q5_K; Q4_K_M
    /// and Q5_K_M put ffn_down of the layers use_more_bits picks (first and last eighth, every third between) and
    /// the attn_v-like tensors it picks by their count in Q6_K; with eight experts attn_kv_b is Q8_0 and (Q4_K_S,
    /// Q4_K_M) attn_output Q5_K; a file without an output matrix gives its token embedding the output's type; a type
    /// whose blocks the rows do not fill falls back as llama.cpp's (Q5_K → Q5_1, Q4_K → Q5_0, Q6_K → Q8_0).</summary>
    [Fact]
    public void TypeRules_FollowLlamaQuantizesChoices()
    {
        string[] kvB = [.. Enumerable.Range(0, 16).Select(l => G.Block(l, G.AttnKvB))], names = [G.Output, G.TokenEmbd, .. kvB];
        var q4ks = new GgufTypeRules(GgufFileType.Q4_K_S, 16, 64, names);
        Assert.Equal(GgmlType.Q6_K, q4ks.For(G.Output, 2048, 2));
        Assert.Equal(GgmlType.Q4_K, q4ks.For(G.TokenEmbd, 2048, 2));
        Assert.Equal(GgmlType.F32, q4ks.For(G.Block(0, G.AttnNorm), 2048, 1));
        Assert.Equal(GgmlType.Q5_K, q4ks.For(G.Block(0, G.FfnDown), 10240, 2));
        Assert.Equal(GgmlType.Q5_1, q4ks.For(G.Block(0, G.FfnDown), 10944, 2)); // Q5_K's fallback
        Assert.Equal(GgmlType.Q5_K, q4ks.For(G.Block(1, G.FfnDownShexp), 2816, 2));
        Assert.Equal(GgmlType.Q5_1, q4ks.For(G.Block(1, G.FfnDownExps), 1408, 3));
        Assert.Equal(GgmlType.Q4_K, q4ks.For(G.Block(2, G.FfnDownShexp), 2816, 2));
        Assert.Equal(GgmlType.Q5_0, q4ks.For(G.Block(2, G.FfnDownExps), 1408, 3)); // Q4_K's fallback
        Assert.Equal(GgmlType.Q4_K, q4ks.For(G.Block(2, G.FfnUpExps), 2048, 3));
        Assert.Equal(GgmlType.Q4_K, q4ks.For(G.Block(0, G.AttnOutput), 2048, 2));
        Assert.Equal(GgmlType.Q4_K, q4ks.For(G.Block(0, G.AttnVB), 512, 3)); // not attn_v-like by name
        for (int l = 0; l < 6; l++) Assert.Equal(l < 4 ? GgmlType.Q5_K : GgmlType.Q4_K, q4ks.For(kvB[l], 512, 2));

        // use_more_bits(i, 16): i < 2, i >= 14, or (i - 2) % 3 == 2: layers 0, 1, 4, 7, 10, 13, 14, 15.
        int[] moreBits = [0, 1, 4, 7, 10, 13, 14, 15];
        foreach (GgufFileType medium in new[] { GgufFileType.Q4_K_M, GgufFileType.Q5_K_M })
        {
            var rules = new GgufTypeRules(medium, 16, 64, names);
            GgmlType plain = medium.Format.ToGgml();
            for (int l = 0; l < 16; l++)
            {
                GgmlType expected = moreBits.Contains(l) ? GgmlType.Q6_K : plain;
                Assert.Equal(expected, rules.For(kvB[l], 512, 2));
                Assert.Equal(expected, rules.For(G.Block(l, G.FfnDownShexp), 2816, 2));
                Assert.Equal(moreBits.Contains(l) ? GgmlType.Q8_0 : plain == GgmlType.Q4_K ? GgmlType.Q5_0 : GgmlType.Q5_1,
                    rules.For(G.Block(l, G.FfnDownExps), 1408, 3));
                Assert.Equal(plain, rules.For(G.Block(l, G.FfnGateExps), 2048, 3));
            }
            Assert.Equal(GgmlType.Q6_K, rules.For(G.Output, 2048, 2));
        }

        var q5ks = new GgufTypeRules(GgufFileType.Q5_K_S, 16, 64, names);
        Assert.Equal(GgmlType.Q5_K, q5ks.For(G.Block(0, G.FfnDown), 10240, 2));
        Assert.Equal(GgmlType.Q5_K, q5ks.For(kvB[0], 512, 2));
        Assert.Equal(GgmlType.Q6_K, q5ks.For(G.Output, 2048, 2));

        var eightExperts = new GgufTypeRules(GgufFileType.Q4_K_M, 16, 8, names);
        Assert.Equal(GgmlType.Q8_0, eightExperts.For(kvB[0], 512, 2));
        Assert.Equal(GgmlType.Q5_K, eightExperts.For(G.Block(0, G.AttnOutput), 2048, 2));
        Assert.Equal(GgmlType.Q8_0, new GgufTypeRules(GgufFileType.Q6_K, 16, 8, names).For(kvB[3], 512, 2));

        // No output matrix among the file's tensors: the token embedding serves as it, and gets its type.
        Assert.Equal(GgmlType.Q6_K, new GgufTypeRules(GgufFileType.Q4_K_M, 16, 64, [G.TokenEmbd, .. kvB]).For(G.TokenEmbd, 2048, 2));
        Assert.Equal(GgmlType.Q4_K, new GgufTypeRules(GgufFileType.Q4_K_M, 16, 64, [G.TokenEmbd, G.Output]).For(G.TokenEmbd, 2048, 2));

        // Q2_K: ffn_down and attn_output Q3_K, attn_v-like Q4_K where four or more heads share a KV head (else Q3_K);
        // rows of 128 or 1,408 do not fill Q2_K's or Q3_K's 256-blocks and fall back to Q4_0.
        var q2k = new GgufTypeRules(GgufFileType.Q2_K, 16, 64, names, gqa: 16);
        Assert.Equal(GgmlType.Q6_K, q2k.For(G.Output, 2048, 2));
        Assert.Equal(GgmlType.Q2_K, q2k.For(G.TokenEmbd, 2048, 2));
        Assert.Equal(GgmlType.Q2_K, q2k.For(G.Block(0, G.AttnQ), 2048, 2));
        Assert.Equal(GgmlType.Q4_0, q2k.For(G.Block(0, G.AttnKB), 128, 3));
        Assert.Equal(GgmlType.Q2_K, q2k.For(G.Block(0, G.AttnVB), 512, 3));
        Assert.Equal(GgmlType.Q3_K, q2k.For(G.Block(0, G.AttnOutput), 2048, 2));
        Assert.Equal(GgmlType.Q3_K, q2k.For(G.Block(5, G.FfnDownShexp), 2816, 2));
        Assert.Equal(GgmlType.Q4_0, q2k.For(G.Block(5, G.FfnDownExps), 1408, 3));
        Assert.Equal(GgmlType.Q2_K, q2k.For(G.Block(5, G.FfnUpExps), 2048, 3));
        Assert.Equal(GgmlType.Q4_K, q2k.For(kvB[0], 512, 2));
        Assert.Equal(GgmlType.Q3_K, new GgufTypeRules(GgufFileType.Q2_K, 16, 64, names, gqa: 1).For(kvB[0], 512, 2));

        // Q3_K_S keeps Q3_K but where the rows fall back; Q3_K_L gives ffn_down, attn_output and the attn_v-like
        // tensors Q5_K. With eight experts attn_output is Q5_K in Q3_K_S but stays Q3_K in Q3_K_L (llama.cpp's list of
        // types that get Q5_K there leaves Q3_K_L out).
        foreach ((GgufFileType file, GgmlType down, GgmlType downExps, GgmlType attention, GgmlType outputOfEight) in new[]
            {
                (GgufFileType.Q3_K_S, GgmlType.Q3_K, GgmlType.Q4_0, GgmlType.Q3_K, GgmlType.Q5_K),
                (GgufFileType.Q3_K_L, GgmlType.Q5_K, GgmlType.Q5_1, GgmlType.Q5_K, GgmlType.Q3_K),
            })
        {
            var rules = new GgufTypeRules(file, 16, 64, names);
            Assert.Equal(down, rules.For(G.Block(9, G.FfnDownShexp), 2816, 2));
            Assert.Equal(downExps, rules.For(G.Block(9, G.FfnDownExps), 1408, 3));
            Assert.Equal(attention, rules.For(G.Block(9, G.AttnOutput), 2048, 2));
            Assert.Equal(attention, rules.For(kvB[0], 512, 2));
            Assert.Equal(outputOfEight, new GgufTypeRules(file, 16, 8, names).For(G.Block(0, G.AttnOutput), 2048, 2));
        }

        // Q3_K_M: ffn_down Q5_K in the first sixteenth of the layers (layer 0 of 16), Q4_K after; the first two
        // attn_v-like tensors Q5_K, the rest Q4_K; attn_output Q4_K.
        var q3km = new GgufTypeRules(GgufFileType.Q3_K_M, 16, 64, names);
        Assert.Equal(GgmlType.Q5_K, q3km.For(G.Block(0, G.FfnDown), 10240, 2));
        Assert.Equal(GgmlType.Q5_1, q3km.For(G.Block(0, G.FfnDown), 10944, 2)); // Q5_K's fallback
        Assert.Equal(GgmlType.Q4_K, q3km.For(G.Block(1, G.FfnDownShexp), 2816, 2));
        Assert.Equal(GgmlType.Q5_0, q3km.For(G.Block(1, G.FfnDownExps), 1408, 3)); // Q4_K's fallback
        Assert.Equal(GgmlType.Q3_K, q3km.For(G.Block(1, G.FfnGateExps), 2048, 3));
        Assert.Equal(GgmlType.Q4_K, q3km.For(G.Block(1, G.AttnOutput), 2048, 2));
        for (int l = 0; l < 4; l++) Assert.Equal(l < 2 ? GgmlType.Q5_K : GgmlType.Q4_K, q3km.For(kvB[l], 512, 2));
        Assert.Equal(GgmlType.Q4_K, new GgufTypeRules(GgufFileType.Q3_K_M, 32, 64, names).For(G.Block(2, G.FfnDownShexp), 2816, 2));
        Assert.Equal(GgmlType.Q5_K, new GgufTypeRules(GgufFileType.Q3_K_M, 32, 64, names).For(G.Block(1, G.FfnDownShexp), 2816, 2));

        var q8 = new GgufTypeRules(GgufFileType.Q8_0, 16, 64, names);
        Assert.Equal(GgmlType.Q8_0, q8.For(G.Output, 2048, 2));
        Assert.Equal(GgmlType.F16, q8.For(G.Block(0, G.FfnDown), 10945, 2));
        Assert.Equal(GgmlType.F16, new GgufTypeRules(GgufFileType.F16, 16, 64, names).For(G.Output, 2048, 2));
    }

    [Fact]
    public void RequantisingTheF32Gguf_GivesTheSameFileAsConvertingTheCheckpoint()
    {
        string viaF32 = Path.Combine(TestScratch.Root, $"dss-gguf-requant-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufConverter.Convert(Convert("v3-fp8-tiny", WeightFormat.F32), viaF32, WeightFormat.Q8_0);
            using var direct = GgufFile.Open(Convert("v3-fp8-tiny", WeightFormat.Q8_0));
            using var requantised = GgufFile.Open(viaF32);
            Assert.Equal(7, requantised.Integer("general.file_type"));
            Assert.Equal(direct.Metadata.Keys.Order(), requantised.Metadata.Keys.Order());
            Assert.Equal(direct.TensorList.Select(t => (t.Name, t.Type)), requantised.TensorList.Select(t => (t.Name, t.Type)));
            foreach (GgufTensorInfo t in direct.TensorList)
                Assert.True(direct.Bytes(t, 0, (int)t.Bytes).SequenceEqual(requantised.Bytes(requantised.Tensors[t.Name], 0, (int)t.Bytes)), t.Name);
        }
        finally { File.Delete(viaF32); }
    }

    [Fact]
    public void OlderFilesWithAttnKvB_LoadToo()
    {
        // Rewrite the f32 conversion with attn_kv_b in place of attn_k_b/attn_v_b and the older key_length
        // convention (key_length = nope + rope, value_length = v_head_dim, no *_mla keys).
        GoldenCase g = GoldenCase.Load("v2-lite-tiny");
        string src = Convert("v2-lite-tiny", WeightFormat.F32);
        string dst = Path.Combine(TestScratch.Root, $"dss-gguf-old-{Guid.NewGuid():N}.gguf");
        try
        {
            using (DeepSeekModel hf = DeepSeekModel.Load(g.Directory))
            using (var f = GgufFile.Open(src))
            {
                ModelConfig c = hf.Config;
                var meta = f.Metadata.Where(kv => !kv.Key.EndsWith("_mla", StringComparison.Ordinal)).Select(kv =>
                    kv.Key == "deepseek2.attention.key_length" ? new KeyValuePair<string, GgufValue>(kv.Key, GgufValue.U32((uint)c.QkHeadDim))
                    : kv.Key == "deepseek2.attention.value_length" ? new KeyValuePair<string, GgufValue>(kv.Key, GgufValue.U32((uint)c.VHeadDim))
                    : kv).ToList();
                var tensors = new List<(string, GgmlType, long[])>();
                foreach (GgufTensorInfo t in f.TensorList)
                {
                    if (t.Name.EndsWith(G.AttnVB, StringComparison.Ordinal)) continue;
                    tensors.Add(t.Name.EndsWith(G.AttnKB, StringComparison.Ordinal)
                        ? (t.Name.Replace(G.AttnKB, G.AttnKvB), GgmlType.F32, [c.KvLoraRank, c.NHeads * (c.QkNopeHeadDim + c.VHeadDim)])
                        : (t.Name, t.Type, t.Dims));
                }
                using var w = new GgufWriter(dst, meta, tensors);
                foreach (var (name, _, _) in tensors)
                {
                    if (name.EndsWith(G.AttnKvB, StringComparison.Ordinal))
                    {
                        int layer = int.Parse(name.Split('.')[1]);
                        Matrix kvb = hf.Weights.Blocks[layer].Attn.WkvB;
                        var row = new float[kvb.Cols];
                        for (int r = 0; r < kvb.Rows; r++)
                        {
                            kvb.DequantizeRow(r, row);
                            w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(row.AsSpan()));
                        }
                    }
                    else
                    {
                        GgufTensorInfo t = f.Tensors[name];
                        w.Write(f.Bytes(t, 0, (int)t.Bytes));
                    }
                }
                w.Commit();
            }
            using DeepSeekModel old = DeepSeekModel.Load(dst);
            Assert.Equal(GoldenCase.Load("v2-lite-tiny").PromptIds.Length, g.PromptIds.Length);
            float[] logits = Logits(old, g.PromptIds);
            int v = old.Config.VocabSize;
            for (int p = 0; p < g.PromptIds.Length; p++)
                Compare.Close(logits.AsSpan(p * v, v), g.PerPositionLogits[p], 1e-4, $"older-layout gguf at {p}");
        }
        finally { File.Delete(dst); }
    }

    /// <summary>Mapped weights keep the file layout; copied ones are kept in tiles where the CPU has them (Q8_0 and,
    /// through q4_k's fallback on these narrow rows, Q5_0): the prompt's logits and then one decoded token's must be
    /// the same bits.</summary>
    [Theory]
    [InlineData(WeightFormat.Q8_0, WeightFormat.Q8_0)]
    [InlineData(WeightFormat.Q4_K, WeightFormat.Q5_0)]
    [InlineData(WeightFormat.Q4_0, WeightFormat.Q4_0)]
    public void MemoryMappedGguf_UsesBlocksInPlace_AndMatchesAnonymous(WeightFormat type, WeightFormat held)
    {
        GoldenCase g = GoldenCase.Load("v3-tiny");
        string path = Convert("v3-tiny", type);
        using DeepSeekModel mapped = DeepSeekModel.Load(path, new LoadOptions { MemoryMap = true });
        using DeepSeekModel copied = DeepSeekModel.Load(path);
        Assert.Contains(mapped.Weights.AllMatrices(), m => m.Format == held);
        using InferenceSession a = copied.CreateSession(g.PromptIds.Length + 1), b = mapped.CreateSession(g.PromptIds.Length + 1);
        Assert.Equal(a.Forward(g.PromptIds).ToArray(), b.Forward(g.PromptIds).ToArray());
        Assert.Equal(a.Forward([g.PromptIds[0]]).ToArray(), b.Forward([g.PromptIds[0]]).ToArray());
    }
}
