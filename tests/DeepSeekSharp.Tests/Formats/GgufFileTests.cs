using DeepSeekSharp.Linear;
using System.Buffers.Binary;
using System.Text;
using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Kernels.Quant;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tests.Cli;
using DeepSeekSharp.Tests.Text;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Formats;

/// <summary>The GGUF container: what a written file reads back as, and a clear error for each kind of damage.</summary>
public class GgufFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(TestScratch.Root, "dss-gguf-file-" + Guid.NewGuid().ToString("N"));

    public GgufFileTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A small valid file: every metadata type, two tensors (F32 [3, 2] and Q8_0 [64]).</summary>
    private string WriteSample(string name = "sample.gguf", uint? alignment = null)
    {
        var meta = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str("deepseek2")),
            new("u8", new GgufValue(GgufValueType.UInt8, (byte)7)), new("i8", new GgufValue(GgufValueType.Int8, (sbyte)-7)),
            new("u16", new GgufValue(GgufValueType.UInt16, (ushort)700)), new("i16", new GgufValue(GgufValueType.Int16, (short)-700)),
            new("u32", GgufValue.U32(70000)), new("i32", GgufValue.I32(-70000)), new("f32", GgufValue.F32(0.25f)),
            new("bool", GgufValue.Bool(true)), new("str", GgufValue.Str("héllo")),
            new("u64", new GgufValue(GgufValueType.UInt64, 1UL << 40)), new("i64", new GgufValue(GgufValueType.Int64, -(1L << 40))),
            new("f64", new GgufValue(GgufValueType.Float64, 0.125)),
            new("strs", GgufValue.Strings(["a", "b c", ""])), new("ints", GgufValue.Ints([1, -2, 3])), new("floats", GgufValue.Floats([1.5f])),
        };
        if (alignment is { } a) meta.Add(new("general.alignment", GgufValue.U32(a)));
        string path = PathOf(name);
        using var w = new GgufWriter(path, meta, [("t.f32", GgmlType.F32, [3, 2]), ("t.q8", GgmlType.Q8_0, [64])]);
        w.Write(MemoryMarshal.AsBytes<float>([1, 2, 3, 4, 5, 6]));
        var q = new byte[GgmlType.Q8_0.Traits().RowBytes(64)];
        GgmlType.Q8_0.Traits().Quantize(Enumerable.Range(0, 64).Select(i => i / 64f).ToArray(), q);
        w.Write(q);
        w.Commit();
        return path;
    }

    [Fact]
    public void Written_ReadsBack_EveryValueTypeAndTensor()
    {
        using var f = GgufFile.Open(WriteSample());
        Assert.Equal(3u, f.Version);
        Assert.Equal(7, f.Integer("u8"));
        Assert.Equal(-7, f.Integer("i8"));
        Assert.Equal(-700, f.Integer("i16"));
        Assert.Equal(-70000, f.Integer("i32"));
        Assert.Equal(1L << 40, f.Integer("u64"));
        Assert.Equal(0.25, f.Number("f32"));
        Assert.Equal(0.125, f.Number("f64"));
        Assert.True(f.Flag("bool"));
        Assert.Equal("héllo", f.String("str"));
        Assert.Equal(["a", "b c", ""], f.Array<string>("strs")!);
        Assert.Equal([1, -2, 3], f.Array<int>("ints")!);
        GgufTensorInfo t = f.Tensors["t.f32"];
        Assert.Equal([3L, 2], t.Dims);
        Assert.Equal([2L, 3], t.Shape);
        Assert.Equal(MemoryMarshal.AsBytes<float>([1, 2, 3, 4, 5, 6]).ToArray(), f.Bytes(t, 0, 24).ToArray());
        Assert.Equal(0, f.Tensors["t.q8"].Offset % 32);
        Assert.False(File.Exists(PathOf("sample.gguf.tmp")));
    }

    [Fact]
    public void CustomAlignment_IsHonoured()
    {
        using var f = GgufFile.Open(WriteSample("aligned.gguf", alignment: 64));
        Assert.Equal(0, f.DataStart % 64);
        Assert.All(f.TensorList, t => Assert.Equal(0, t.Offset % 64));
    }

    [Fact]
    public void WrongTypedMetadata_ErrorNamesTheKey()
    {
        using var f = GgufFile.Open(WriteSample());
        Assert.Contains("'str' must be an integer", Assert.Throws<InvalidDataException>(() => f.Integer("str")).Message);
        Assert.Contains("'u32' must be a string", Assert.Throws<InvalidDataException>(() => f.String("u32")).Message);
    }

    private string Damaged(string name, Action<byte[]> damage)
    {
        byte[] bytes = File.ReadAllBytes(WriteSample());
        damage(bytes);
        File.WriteAllBytes(PathOf(name), bytes);
        return PathOf(name);
    }

    private static T Fails<T>(string path) where T : Exception => Assert.Throws<T>(() => GgufFile.Open(path).Dispose());

    [Fact]
    public void BadMagic_IsNamed() =>
        Assert.Contains("not a GGUF file", Fails<InvalidDataException>(Damaged("magic.gguf", b => b[0] = (byte)'X')).Message);

    [Fact]
    public void UnsupportedVersion_IsNamed()
    {
        string path = Damaged("v1.gguf", b => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 1));
        Assert.Contains("GGUF version 1 is not supported; supported: 2, 3", Fails<NotSupportedException>(path).Message);
    }

    [Fact]
    public void TruncatedHeader_IsNamed()
    {
        byte[] bytes = File.ReadAllBytes(WriteSample());
        File.WriteAllBytes(PathOf("short.gguf"), bytes[..60]);
        Assert.Contains("truncated", Fails<InvalidDataException>(PathOf("short.gguf")).Message);
    }

    [Fact]
    public void TruncatedData_NamesTheTensorPastTheEnd()
    {
        byte[] bytes = File.ReadAllBytes(WriteSample());
        File.WriteAllBytes(PathOf("cut.gguf"), bytes[..^40]); // past the last tensor's padding, into its 34 bytes
        string m = Fails<InvalidDataException>(PathOf("cut.gguf")).Message;
        Assert.Contains("t.q8", m);
        Assert.Contains("past the end of the file", m);
    }

    /// <summary>Finds the tensor-info record of <paramref name="name"/> (after its length-prefixed name).</summary>
    private static int InfoOf(byte[] b, string name)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        for (int i = 8; i + n.Length < b.Length; i++)
            if (BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(i - 8)) == (ulong)n.Length && b.AsSpan(i, n.Length).SequenceEqual(n)) return i + n.Length;
        throw new InvalidOperationException(name);
    }

    [Fact]
    public void OffsetOutsideTheFile_NamesTheTensor()
    {
        // t.f32: n_dims u32, 2 dims u64, type u32, offset u64
        string path = Damaged("offset.gguf", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(InfoOf(b, "t.f32") + 4 + 16 + 4), 1UL << 40));
        string m = Fails<InvalidDataException>(path).Message;
        Assert.Contains("t.f32", m);
        Assert.Contains("outside the file", m);
    }

    [Fact]
    public void UnalignedOffset_NamesTheTensor()
    {
        string path = Damaged("unaligned.gguf", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(InfoOf(b, "t.q8") + 4 + 8 + 4), 33));
        Assert.Contains("'t.q8' data offset 33 is not a multiple of the alignment 32", Fails<InvalidDataException>(path).Message);
    }

    [Fact]
    public void OverlappingTensors_AreNamed()
    {
        string path = Damaged("overlap.gguf", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(InfoOf(b, "t.q8") + 4 + 8 + 4), 0));
        Assert.Contains("overlap", Fails<InvalidDataException>(path).Message);
    }

    [Fact]
    public void ShapeNotWholeBlocks_NamesTheTensorAndType()
    {
        // t.q8 with 40 values: Q8_0 needs whole blocks of 32
        string path = Damaged("blocks.gguf", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(InfoOf(b, "t.q8") + 4), 40));
        string m = Fails<InvalidDataException>(path).Message;
        Assert.Contains("'t.q8' is Q8_0 with rows of 40 values", m);
    }

    [Fact]
    public void DuplicateTensorName_IsNamed()
    {
        string path = PathOf("dup.gguf");
        using (var w = new GgufWriter(path, [], [("x", GgmlType.F32, [4]), ("x", GgmlType.F32, [4])]))
        {
            w.Write(new byte[16]);
            w.Write(new byte[16]);
            w.Commit();
        }
        Assert.Contains("tensor 'x' appears twice", Fails<InvalidDataException>(path).Message);
    }

    [Fact]
    public void DuplicateKey_IsNamed()
    {
        string path = Damaged("dupkey.gguf", b => Encoding.UTF8.GetBytes("u8").CopyTo(b, InfoOf(b, "i8") - 2));
        Assert.Contains("metadata key 'u8' appears twice", Fails<InvalidDataException>(path).Message);
    }

    [Fact]
    public void UnsupportedTensorType_NamesTypeTensorAndTheSupportedOnes()
    {
        string path = Damaged("iq.gguf", b => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(InfoOf(b, "t.q8") + 4 + 8), (uint)GgmlType.IQ2_XXS));
        string m = Fails<NotSupportedException>(path).Message;
        Assert.Contains("'t.q8'", m);
        Assert.Contains("IQ2_XXS is not supported", m);
        Assert.Contains("Q4_K", m);
    }

    [Fact]
    public void HugeArrayLength_IsRefusedBeforeAllocating()
    {
        // the "strs" array count
        string path = Damaged("huge.gguf", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(InfoOf(b, "strs") + 4 + 4), ulong.MaxValue / 2));
        Assert.Contains("'strs'", Fails<InvalidDataException>(path).Message);
    }

    [Fact]
    public void RandomCorruptions_LoadOrFailWithADataError()
    {
        byte[] original = File.ReadAllBytes(WriteSample());
        var rng = new Random(3);
        for (int i = 0; i < 300; i++)
        {
            byte[] b = (byte[])original.Clone();
            int n = rng.Next(1, 4);
            for (int k = 0; k < n; k++) b[rng.Next(0, Math.Min(b.Length, 420))] = (byte)rng.Next(256);
            string path = PathOf($"m{i}.gguf");
            File.WriteAllBytes(path, b);
            try { GgufFile.Open(path).Dispose(); }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException)
            {
                Assert.Contains($"m{i}.gguf", e.Message);
            }
        }
    }

    [Fact]
    public void NotADeepseek2File_IsRefusedNamingTheArchitecture()
    {
        string path = PathOf("llama.gguf");
        using (var w = new GgufWriter(path, [new("general.architecture", GgufValue.Str("llama"))], []))
            w.Commit();
        var e = Assert.Throws<NotSupportedException>(() => DeepSeekModel.Load(path));
        Assert.Contains("architecture 'llama' is not supported; supported: deepseek2", e.Message);
    }

    [Fact]
    public void MissingHyperParameter_IsNamed()
    {
        GoldenCase g = GoldenCase.Load("v2-lite-tiny");
        using var f = GgufFile.Open(GgufModelTests.Convert("v2-lite-tiny", WeightFormat.F32));
        string path = PathOf("nokv.gguf");
        using (var w = new GgufWriter(path, f.Metadata.Where(kv => kv.Key != "deepseek2.attention.kv_lora_rank"), []))
            w.Commit();
        Assert.Contains("'deepseek2.attention.kv_lora_rank' is missing", Assert.Throws<InvalidDataException>(() => DeepSeekModel.Load(path)).Message);
        Assert.NotNull(g);
    }

    /// <summary>A GGUF converted from a checkpoint with the real DeepSeek-V3 tokenizer.</summary>
    private static readonly Lazy<string> WithVocab = new(() =>
    {
        string path = Path.Combine(TestScratch.Root, $"dss-gguf-vocab-{Guid.NewGuid():N}.gguf");
        GgufConverter.Convert(RandomModel.V3Tiny, path, WeightFormat.Q8_0);
        return path;
    });

    [Fact]
    public void Vocabulary_FromGguf_TokenizesEveryGoldenCaseLikeTokenizerJson()
    {
        Tokenizer t = Tokenizer.Load(WithVocab.Value);
        var failures = new List<string>();
        foreach (TokenizerTests.Case c in TokenizerTests.Cases())
        {
            if (!t.Encode(c.Text, addBos: false).SequenceEqual(c.Ids)) failures.Add(c.Name);
            if (!t.Encode(c.Text).SequenceEqual(c.IdsWithBos)) failures.Add(c.Name + " (BOS)");
            if (t.Decode(c.Ids) != c.Decoded) failures.Add(c.Name + " (decode)");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differ: {string.Join(", ", failures.Take(20))}");
        Assert.Equal(TokenizerTests.V3.VocabSize, t.VocabSize);
        Assert.Equal(0, t.BosId);
        Assert.Equal(1, t.EosId);
        Assert.Equal(TokenizerTests.V3.Config.ChatTemplate, t.Config.ChatTemplate);
    }

    [Fact]
    public void Vocabulary_IsWrittenAsLlamaCppDoes()
    {
        using var f = GgufFile.Open(WithVocab.Value);
        Assert.Equal("gpt2", f.String("tokenizer.ggml.model"));
        Assert.Equal("deepseek-v3", f.String("tokenizer.ggml.pre"));
        string[] tokens = f.Array<string>("tokenizer.ggml.tokens")!;
        int[] types = f.Array<int>("tokenizer.ggml.token_type")!;
        Assert.Equal(129280, tokens.Length); // the model's vocab_size, padded
        Assert.Equal("<｜begin▁of▁sentence｜>", tokens[0]);
        Assert.Equal(3, types[0]);          // control
        Assert.Equal(3, types[128803]);     // <｜User｜>: not special in tokenizer.json, but looks special
        Assert.Equal(1, types[300]);        // normal
        Assert.Equal("[PAD129000]", tokens[129000]);
        Assert.Equal(5, types[129000]);     // unused
        Assert.Equal("Ġ t", f.Array<string>("tokenizer.ggml.merges")![0]);
        Assert.True(f.Flag("tokenizer.ggml.add_bos_token"));
    }

    [Fact]
    public void Cli_ConvertThenInspectAndGenerateFromTheGgufFile()
    {
        string path = ConvertedByTheCli("cli.gguf", "q8_0", "wrote");
        var inspect = CliRunner.Run("inspect", "--model", path);
        Assert.True(inspect.Code == 0, inspect.Stderr);
        Assert.Contains("Q8_0", inspect.Stdout);
        var meta = CliRunner.Run("inspect", "--model", path, "--metadata");
        Assert.True(meta.Code == 0, meta.Stderr);
        Assert.Contains("deepseek2.attention.kv_lora_rank", meta.Stdout);
        Assert.Contains("tokenizer.ggml.tokens", meta.Stdout);
        Assert.Matches(@"blk\.0\.attn_k_b\.weight\s+\S+\s+\[", meta.Stdout);
        AssertGenerates(path);
    }

    /// <summary><c>dss convert</c> of the random v3-tiny into <paramref name="file"/> as <paramref name="type"/>: it
    /// succeeds and its report contains <paramref name="says"/>.</summary>
    private string ConvertedByTheCli(string file, string type, string says)
    {
        string path = PathOf(file);
        var (code, _, stderr) = CliRunner.Run("convert", "--model", RandomModel.V3Tiny, "--out", path, "--type", type);
        Assert.True(code == 0, stderr);
        Assert.Contains(says, stderr);
        return path;
    }

    /// <summary><c>dss generate</c> from the file writes four tokens.</summary>
    private static void AssertGenerates(string path)
    {
        var gen = CliRunner.Run("generate", "--model", path, "--prompt", "Hello", "--max-tokens", "4", "--temperature", "0", "--context", "64");
        Assert.True(gen.Code == 0, gen.Stderr);
        Assert.Contains("completion 4", gen.Stderr);
    }

    /// <summary><c>dss convert --type T</c> takes llama-quantize's names for its mixes (in upper case too) and writes
    /// the file type's id, every tensor in the type <see cref="GgufTypeRules"/> gives it for the file's layers, experts
    /// and heads per KV head, in the order written, v3-tiny's 64-wide rows in the type's fallback; the model loads and
    /// generates from it.</summary>
    [Theory]
    [InlineData("Q4_K_M", 15, GgmlType.Q5_0)]
    [InlineData("q3_k_m", 12, GgmlType.Q5_0)]
    [InlineData("Q2_K", 10, GgmlType.Q4_0)]
    public void Cli_ConvertsToLlamaQuantizesMixes(string type, int id, GgmlType fallback)
    {
        string path = ConvertedByTheCli($"cli-{type}.gguf", type, $"({type.ToLowerInvariant()})");
        using (var f = GgufFile.Open(path))
        {
            Assert.Equal(id, f.Integer("general.file_type"));
            int Key(string key) => (int)f.Integer("deepseek2." + key)!;
            var rules = new GgufTypeRules(GgufFileType.Parse(type), Key("block_count"), Key("expert_count"), f.TensorList.Select(t => t.Name),
                Key("attention.head_count") / Key("attention.head_count_kv"));
            foreach (var t in f.TensorList) Assert.Equal((t.Name, rules.For(t.Name, t.Dims[0], t.Dims.Length)), (t.Name, t.Type));
            Assert.Contains(f.TensorList, t => t.Type == fallback);
        }
        AssertGenerates(path);
    }

    /// <summary>Writes <paramref name="src"/> as <paramref name="parts"/> files the way gguf-split does: metadata
    /// in the first, split.no / split.count / split.tensors.count in each, tensors spread over them.</summary>
    private string Split(string src, int parts, string name)
    {
        using var f = GgufFile.Open(src);
        int per = (f.TensorList.Count + parts - 1) / parts;
        for (int p = 0; p < parts; p++)
        {
            var meta = new List<KeyValuePair<string, GgufValue>>
            {
                new(GgufCheckpoint.SplitNo, new GgufValue(GgufValueType.UInt16, (ushort)p)),
                new(GgufCheckpoint.SplitCount, new GgufValue(GgufValueType.UInt16, (ushort)parts)),
                new(GgufCheckpoint.SplitTensors, GgufValue.I32(f.TensorList.Count)),
            };
            if (p == 0) meta.AddRange(f.Metadata);
            GgufTensorInfo[] mine = f.TensorList.Skip(p * per).Take(per).ToArray();
            using var w = new GgufWriter(PathOf($"{name}-{p + 1:D5}-of-{parts:D5}.gguf"), meta, mine.Select(t => (t.Name, t.Type, t.Dims)));
            foreach (GgufTensorInfo t in mine) w.Write(f.Bytes(t, 0, (int)t.Bytes));
            w.Commit();
        }
        return PathOf($"{name}-00001-of-{parts:D5}.gguf");
    }

    [Fact]
    public void SplitGguf_LoadsFromItsFirstPart_AndGivesTheSameLogits()
    {
        GoldenCase g = GoldenCase.Load("v2-lite-tiny");
        string whole = GgufModelTests.Convert("v2-lite-tiny", WeightFormat.Q8_0);
        string first = Split(whole, 3, "split");
        using DeepSeekModel a = DeepSeekModel.Load(whole), b = DeepSeekModel.Load(first);
        using InferenceSession sa = a.CreateSession(32), sb = b.CreateSession(32);
        Assert.Equal(sa.Forward(g.PromptIds), sb.Forward(g.PromptIds));
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", first);
        Assert.True(code == 0, stderr);
        Assert.Contains("Q8_0", stdout);
    }

    [Fact]
    public void SplitGguf_MissingPart_OrOpeningALaterPart_IsNamed()
    {
        string first = Split(GgufModelTests.Convert("v2-lite-tiny", WeightFormat.F32), 3, "gap");
        File.Delete(PathOf("gap-00002-of-00003.gguf"));
        Assert.Contains("'gap-00002-of-00003.gguf', is missing", Assert.Throws<FileNotFoundException>(() => DeepSeekModel.Load(first)).Message);
        Assert.Contains("open the first part", Assert.Throws<InvalidDataException>(() => DeepSeekModel.Load(PathOf("gap-00003-of-00003.gguf"))).Message);
    }

    [Fact]
    public void Cli_MissingGguf_FailsNamingIt()
    {
        var (code, _, stderr) = CliRunner.Run("inspect", "--model", PathOf("nope.gguf"));
        Assert.Equal(1, code);
        Assert.Contains("nope.gguf", stderr);
    }
}

file static class MemoryMarshal
{
    public static ReadOnlySpan<byte> AsBytes<T>(T[] values) where T : struct => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan());
}
