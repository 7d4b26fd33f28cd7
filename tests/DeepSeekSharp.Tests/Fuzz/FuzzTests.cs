using System.Diagnostics;
using System.Text;
using System.Text.Json;
using DeepSeekSharp.Formats;
using DeepSeekSharp.Formats.Gguf;
using DeepSeekSharp.Formats.SafeTensors;
using DeepSeekSharp.Server;
using DeepSeekSharp.Text;
using DeepSeekSharp.Text.Templates;

namespace DeepSeekSharp.Tests.Fuzz;

/// <summary>Fuzzing of every parser a stranger's bytes reach: the seed corpus in tests/data/fuzz/TARGET (crashes
/// found earlier included) is replayed, then mutated inputs are run — 200 per target in the test suite, as many as
/// <c>DSS_FUZZ_INPUTS</c> says in a campaign (<c>DSS_FUZZ_INPUTS=100000 dotnet test -c Release --filter
/// FullyQualifiedName~Fuzz</c>; <c>DSS_FUZZ_SEED</c> picks another sequence). An input may only fail with the
/// exception types the parser documents; any other exception, or an input that takes over 5 s, is a finding, saved
/// under the temp folder to become a corpus file.</summary>
public class FuzzTests
{
    private sealed record Target(string Name, bool Json, Action<byte[]> Run, Type[] Documented);

    private static readonly string Corpus = Path.Combine(AppContext.BaseDirectory, "data", "fuzz");
    private static readonly string[] Dictionary =
    [
        "{", "}", "[", "]", ",", ":", "\"", "null", "true", "-0", "1e309", "\\u0000", "\\ud800", "{{", "}}", "{%", "%}", "{#", "#}",
        "for ", "endfor", "if ", "endif", "set ", "macro ", "endmacro", "namespace(", "loop.", "|tojson", "|length", "|trim", "[1:", "::-1]",
        "~", "(", ")", "GGUF", "\u0003\u0000\u0000\u0000", "dtype", "shape", "data_offsets", "F8_E4M3", "BF16", "__metadata__",
        "vocab", "merges", "added_tokens", "pre_tokenizer", "Sequence", "Split", "ByteLevel", "chat_template", "bos_token",
        "num_hidden_layers", "n_routed_experts", "rope_scaling", "kv_lora_rank", "messages", "role", "content", "tool_calls",
    ];

    private static readonly Lazy<TokenizerConfig> R1TinyConfig = new(() =>
        TokenizerConfig.Parse(JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Corpus, "tokenizer_config", "r1-tiny.json"))).RootElement));
    private static readonly Lazy<ChatTemplate> V3Template = new(() => ChatTemplate.Parse(File.ReadAllText(Path.Combine(Corpus, "template", "deepseek-v3.jinja"))));
    private static readonly JsonElement Messages = JsonDocument.Parse("""
        [{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},
         {"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
         {"role":"tool","content":"42"},{"role":"assistant","content":"<think>x</think>Done."},{"role":"user","content":"More"}]
        """).RootElement;

    [ThreadStatic] private static string? _scratch;
    private static string Scratch(string ext) => _scratch ??= Path.Combine(TestScratch.Root, $"dss-fuzz-{Environment.ProcessId}-{Environment.CurrentManagedThreadId}") + ext;

    private static readonly Target[] Targets =
    [
        new("gguf", false, bytes =>
        {
            string path = Scratch(".gguf");
            File.WriteAllBytes(path, bytes);
            using GgufFile f = GgufFile.Open(path);
            foreach (var kv in f.Metadata) _ = kv.Value.ToString();
            foreach (GgufTensorInfo t in f.TensorList) _ = t.ElementCount;
            if (f.Metadata.ContainsKey("tokenizer.ggml.tokens")) Tokenizer.FromGguf(f).Encode("Hello <think>");
        }, [typeof(InvalidDataException), typeof(NotSupportedException)]),
        new("safetensors", false, bytes =>
        {
            string path = Scratch(".safetensors");
            File.WriteAllBytes(path, bytes);
            using SafeTensorsFile f = SafeTensorsFile.Open(path);
            foreach (var t in f.Tensors) _ = t.Value.ToString();
        }, [typeof(InvalidDataException), typeof(NotSupportedException)]),
        new("config", true, bytes => HfConfig.Parse(Encoding.UTF8.GetString(bytes)),
            [typeof(InvalidDataException), typeof(NotSupportedException), typeof(JsonException)]),
        new("tokenizer", true, bytes =>
        {
            using JsonDocument doc = JsonDocument.Parse(bytes);
            Tokenizer t = Tokenizer.FromJson(doc.RootElement, R1TinyConfig.Value);
            t.Decode(t.Encode("Hello 123 <think>ü😀</think>"));
        }, [typeof(InvalidDataException), typeof(NotSupportedException), typeof(JsonException)]),
        new("tokenizer_config", true, bytes =>
        {
            using JsonDocument doc = JsonDocument.Parse(bytes);
            TokenizerConfig c = TokenizerConfig.Parse(doc.RootElement);
            if (c.ChatTemplate is { } source) ChatTemplate.Parse(source).Render(Messages, true, c.BosToken, c.EosToken);
        }, [typeof(InvalidDataException), typeof(JsonException), typeof(TemplateException), typeof(NotSupportedException)]),
        // A template may use a filter or test the engine does not implement: NotSupportedException naming it.
        new("template", false, bytes => ChatTemplate.Parse(Encoding.UTF8.GetString(bytes)).Render(Messages, true, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
            [typeof(TemplateException), typeof(NotSupportedException)]),
        new("chat_request", true, bytes =>
        {
            using JsonDocument doc = JsonDocument.Parse(bytes);
            bool chat = bytes.AsSpan().IndexOf("\"prompt\""u8) < 0; // (not TryGetProperty: the names may be invalid text)
            ChatRequest r = ChatRequest.Parse(doc.RootElement, chat, "v3-tiny-random", 129280);
            if (chat) V3Template.Value.Render(r.Messages, true, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>");
        }, [typeof(ApiError), typeof(JsonException), typeof(TemplateException)]),
    ];

    public static TheoryData<string> Names() => new(Targets.Select(t => t.Name));

    [Theory]
    [MemberData(nameof(Names))]
    public void Parser_SurvivesTheCorpusAndMutations(string name)
    {
        Target target = Targets.Single(t => t.Name == name);
        int inputs = int.TryParse(Environment.GetEnvironmentVariable("DSS_FUZZ_INPUTS"), out int n) ? n : 200;
        int seed = int.TryParse(Environment.GetEnvironmentVariable("DSS_FUZZ_SEED"), out int s) ? s : 1;
        byte[][] corpus = Directory.GetFiles(Path.Combine(Corpus, name)).Order(StringComparer.Ordinal).Select(File.ReadAllBytes).ToArray();
        Assert.NotEmpty(corpus);
        var findings = new List<string>();
        var rng = new Random(seed);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < corpus.Length + inputs && findings.Count < 5; i++)
        {
            byte[] input = i < corpus.Length ? corpus[i] : Mutator.Mutate(corpus[rng.Next(corpus.Length)], corpus, Dictionary, target.Json, rng);
            var one = Stopwatch.StartNew();
            try { target.Run(input); }
            catch (Exception e) when (target.Documented.Any(d => d.IsInstanceOfType(e))) { }
            catch (Exception e) { findings.Add(Save(name, i, input, $"{e.GetType().FullName}: {e.Message}\n{e.StackTrace}")); }
            if (one.Elapsed > TimeSpan.FromSeconds(5)) findings.Add(Save(name, i, input, $"took {one.Elapsed.TotalSeconds:0.0} s"));
        }
        if (_scratch is not null) File.Delete(_scratch);
        Console.WriteLine($"fuzz {name}: {corpus.Length} corpus + {inputs} mutated inputs, seed {seed}, {clock.Elapsed.TotalSeconds:0.0} s, {findings.Count} findings");
        Assert.True(findings.Count == 0, string.Join("\n\n", findings));
    }

    private static string Save(string target, int index, byte[] input, string what)
    {
        string path = Path.Combine(TestScratch.Root, $"dss-fuzz-{target}-{index}.bin");
        File.WriteAllBytes(path, input);
        return $"input #{index} (saved to {path}): {what}";
    }
}
