using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
using DeepSeekSharp.Tensors;
using DeepSeekSharp.Text;
using Json.Schema;
using OutputFormat = DeepSeekSharp.Inference.Constraints.OutputFormat;

namespace DeepSeekSharp.Tests.Inference;

/// <summary>Constrained decoding: the JSON and JSON-schema grammars accept exactly what a JSON parser and a schema
/// validator accept (on token streams of the real DeepSeek-V3 vocabulary), the allowed-token mask agrees with the
/// token-by-token check it speeds up, random generations always parse and validate, even when cut short by their
/// token limit, and sampling under a grammar draws from the renormalised allowed distribution.</summary>
public class ConstrainedDecodingTests
{
    private static readonly Lazy<Tokenizer> V3 = new(() => Tokenizer.Load(Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3")));
    private static readonly Lazy<Tokenizer> Small = new(() => Tokenizer.Load(Path.Combine(AppContext.BaseDirectory, "assets", "models", "r1-tiny")));
    private const int V3Vocab = 129280;

    private static TokenGrammar Bind(Grammar g, Tokenizer t, int vocab) => new(g, t, vocab, t.EosId is { } e ? [e] : []);

    /// <summary>A schema with nested objects, arrays with bounds, enums, numbers, integers, a nullable union, optional
    /// properties and a recursive reference.</summary>
    internal const string OrderSchema = """
    {
      "type": "object",
      "properties": {
        "id": {"type": "integer", "minimum": 0},
        "status": {"enum": ["open", "paid", "shipped"]},
        "total": {"type": "number"},
        "customer": {
          "type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12}, "vip": {"type": "boolean"}},
          "required": ["name"],
          "additionalProperties": false
        },
        "lines": {
          "type": "array", "minItems": 1, "maxItems": 3,
          "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku", "qty"]}
        },
        "note": {"type": ["string", "null"]},
        "parent": {"$ref": "#/$defs/ref"}
      },
      "required": ["id", "status", "lines"],
      "$defs": {"ref": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"id": {"type": "integer"}, "parent": {"$ref": "#/$defs/ref"}}, "required": ["id"]}]}}
    }
    """;

    private static bool Walk(TokenGrammar g, Tokenizer t, string text, out bool complete)
    {
        GrammarMatcher m = g.NewMatcher();
        complete = false;
        foreach (int id in t.Encode(text, addBos: false))
            if (!m.TryAccept(id)) return false;
        complete = m.IsComplete;
        return true;
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{"a": 1}""")]
    [InlineData("""{"a":[1,2.5e-3,-0,true,false,null,{"b":"x\u00e9\n\"\\\/"}],"c":"日本語 😀 ذ"}""")]
    [InlineData("{\n  \"name\": \"x\",\n  \"list\": [\n    1,\n    2\n  ]\n}")]
    [InlineData("\n\n{\"a\": {}}")]
    [InlineData("""{"a": -12.5E+10, "b": 0.0, "c": ""}""")]
    public void JsonObject_accepts_valid_objects(string text)
    {
        JsonDocument.Parse(text).Dispose(); // the case itself is valid JSON
        Assert.True(Walk(Bind(JsonGrammar.AnyObject(), V3.Value, V3Vocab), V3.Value, text, out bool complete));
        Assert.True(complete);
    }

    [Theory]
    [InlineData("""{"a": 01}""")]
    [InlineData("""{"a": 1,}""")]
    [InlineData("""{'a': 1}""")]
    [InlineData("[1, 2]")]
    [InlineData("\"text\"")]
    [InlineData("""{"a": "\ud800"}""")]
    [InlineData("""{"a": NaN}""")]
    [InlineData("""{"a" 1}""")]
    [InlineData("""{"a": 1}}""")]
    [InlineData("{\"a\": \"tab\there\"}")]
    [InlineData("""{"a": 1.}""")]
    [InlineData("""{"a": +1}""")]
    public void JsonObject_refuses_what_is_not_a_json_object(string text)
    {
        bool accepted = Walk(Bind(JsonGrammar.AnyObject(), V3.Value, V3Vocab), V3.Value, text, out bool complete);
        Assert.False(accepted && complete, $"accepted {text}");
    }

    [Fact]
    public void JsonObject_incomplete_text_is_accepted_but_not_complete()
    {
        Assert.True(Walk(Bind(JsonGrammar.AnyObject(), V3.Value, V3Vocab), V3.Value, """{"a": [1, {"b": "x""", out bool complete));
        Assert.False(complete);
    }

    /// <summary>The mask is a cached walk of the vocabulary trie; the specification is <see cref="GrammarMatcher.Allows"/>
    /// token by token. Every token id, at every state along a document, with unlimited and with tight room.</summary>
    [Fact]
    public void Mask_agrees_with_the_token_by_token_check_everywhere()
    {
        Tokenizer t = V3.Value;
        TokenGrammar g = Bind(JsonGrammar.FromSchema(JsonDocument.Parse(OrderSchema).RootElement), t, V3Vocab);
        GrammarMatcher m = g.NewMatcher();
        int[] doc = t.Encode("""{"id": 7, "status": "paid", "lines": [{"sku": "a\u00e9", "qty": -3}], "note": null}""", addBos: false);
        var mask = new ulong[(V3Vocab + 63) / 64];
        int checkedStates = 0;
        for (int step = 0; step <= doc.Length; step++)
        {
            foreach (int room in (int[])[int.MaxValue, 2, 9])
            {
                Array.Clear(mask);
                m.FillMask(mask, room);
                for (int id = 0; id < V3Vocab; id++)
                    Assert.True(((mask[id >> 6] >> (id & 63)) & 1) != 0 == m.Allows(id, room), $"token {id} ({t.TokenText(id)}) at step {step}, room {room}");
            }
            checkedStates++;
            if (step < doc.Length) m.Accept(doc[step]);
        }
        Assert.True(m.IsComplete);
        Assert.Equal(doc.Length + 1, checkedStates);
    }

    /// <summary>Uniformly random allowed tokens until EOS or the limit: the worst "model" there is.</summary>
    private static string RandomWalk(TokenGrammar g, Tokenizer t, Rng rng, int maxTokens, ulong[] mask, List<int> allowed)
    {
        GrammarMatcher m = g.NewMatcher();
        var ids = new List<int>();
        for (int step = 0; step < maxTokens; step++)
        {
            Array.Clear(mask);
            m.FillMask(mask, maxTokens - step - 1);
            allowed.Clear();
            for (int w = 0; w < mask.Length; w++)
                for (ulong bits = mask[w]; bits != 0; bits &= bits - 1)
                    allowed.Add(w * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits));
            Assert.NotEmpty(allowed);
            int id = allowed[(int)(rng.NextDouble() * allowed.Count)];
            if (id == t.EosId) break;
            m.Accept(id);
            ids.Add(id);
        }
        Assert.True(m.IsComplete, "the walk ended before the grammar was complete");
        return t.Decode([.. ids]);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(40)]
    public void Random_generations_under_json_object_always_parse(int maxTokens)
    {
        Tokenizer t = Small.Value;
        TokenGrammar g = Bind(JsonGrammar.AnyObject(), t, 512);
        var rng = new Rng(3);
        var mask = new ulong[8];
        var allowed = new List<int>();
        for (int i = 0; i < 1000; i++)
        {
            string text = RandomWalk(g, t, rng, maxTokens, mask, allowed);
            using JsonDocument doc = JsonDocument.Parse(text);
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
        }
    }

    [Fact]
    public void Random_generations_under_a_schema_always_validate()
    {
        Tokenizer t = Small.Value;
        JsonSchema schema = JsonSchema.FromText(OrderSchema);
        TokenGrammar g = Bind(JsonGrammar.FromSchema(JsonDocument.Parse(OrderSchema).RootElement), t, 512);
        var rng = new Rng(5);
        var mask = new ulong[8];
        var allowed = new List<int>();
        var statuses = new HashSet<string>();
        for (int i = 0; i < 1000; i++)
        {
            string text = RandomWalk(g, t, rng, 120, mask, allowed);
            using JsonDocument doc = JsonDocument.Parse(text);
            EvaluationResults result = schema.Evaluate(doc.RootElement);
            Assert.True(result.IsValid, text);
            statuses.Add(doc.RootElement.GetProperty("status").GetString()!);
        }
        Assert.Equal(3, statuses.Count); // every enum value came up
    }

    [Fact]
    public void Random_generations_with_the_v3_vocabulary_parse()
    {
        Tokenizer t = V3.Value;
        TokenGrammar g = Bind(JsonGrammar.FromSchema(JsonDocument.Parse(OrderSchema).RootElement), t, V3Vocab);
        JsonSchema schema = JsonSchema.FromText(OrderSchema);
        var rng = new Rng(9);
        var mask = new ulong[(V3Vocab + 63) / 64];
        var allowed = new List<int>();
        for (int i = 0; i < 30; i++)
        {
            string text = RandomWalk(g, t, rng, 60, mask, allowed);
            using JsonDocument doc = JsonDocument.Parse(text);
            Assert.True(schema.Evaluate(doc.RootElement).IsValid, text);
        }
    }

    [Theory]
    [InlineData("""{"type": "string", "pattern": "^a+$"}""", "#/pattern")]
    [InlineData("""{"type": "string", "format": "date-time"}""", "#/format")]
    [InlineData("""{"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}}""", "#/properties/n/maximum")]
    [InlineData("""{"type": "integer", "minimum": 3}""", "#/minimum")]
    [InlineData("""{"$ref": "#/$defs/missing"}""", "#/$ref")]
    [InlineData("""{"type": "strange"}""", "#/type")]
    [InlineData("""{"type": "array", "items": false}""", "#/items")]
    [InlineData("""{"enum": []}""", "#/enum")]
    [InlineData("""{"type": "object", "properties": {}, "required": ["x"], "additionalProperties": false}""", "#/required")]
    [InlineData("""{"type": "string", "maxLength": 1000000}""", "#")]
    [InlineData("7", "#")]
    public void Schemas_that_cannot_be_enforced_are_refused_naming_where(string schema, string path)
    {
        var e = Assert.Throws<SchemaException>(() => JsonGrammar.FromSchema(JsonDocument.Parse(schema).RootElement));
        Assert.Equal(path, e.Path);
    }

    /// <summary>Sampling under a grammar: 20,000 seeded draws at temperature 1 from logits where the likeliest tokens
    /// are refused, against the exact renormalised distribution over the allowed ones (chi-square; the seed is fixed,
    /// so the test is deterministic). Greedy picks the likeliest allowed token.</summary>
    [Fact]
    public void Sampling_under_a_grammar_draws_from_the_allowed_distribution()
    {
        Tokenizer t = Small.Value;
        TokenGrammar g = Bind(JsonGrammar.FromSchema(JsonDocument.Parse("""{"enum": ["yes", "no", "maybe"]}""").RootElement), t, 512);
        GrammarMatcher m = g.NewMatcher();
        m.Accept(t.Encode("\"", addBos: false).Single());
        var mask = new ulong[8];
        m.FillMask(mask);
        int[] allowed = [.. Enumerable.Range(0, 512).Where(i => (mask[i >> 6] >> (i & 63) & 1) != 0)];
        Assert.InRange(allowed.Length, 3, 60);
        var rng = new Rng(1);
        var logits = new float[512];
        for (int i = 0; i < 512; i++) logits[i] = (float)(rng.NextDouble() * 4);
        foreach (int i in Enumerable.Range(0, 512).Where(i => !allowed.Contains(i)).Take(100)) logits[i] += 6; // the model prefers refused tokens
        double z = allowed.Sum(i => Math.Exp(logits[i]));
        var counts = new Dictionary<int, int>();
        var chain = new SamplerChain(new SamplingOptions { Seed = 17 }, 512);
        const int draws = 20_000;
        for (int n = 0; n < draws; n++)
        {
            int id = chain.Sample(logits, m, int.MaxValue);
            Assert.Contains(id, allowed);
            counts[id] = counts.GetValueOrDefault(id) + 1;
        }
        double chi2 = allowed.Sum(i => { double e = draws * Math.Exp(logits[i]) / z; double d = counts.GetValueOrDefault(i) - e; return d * d / e; });
        // df = allowed - 1 ≤ 59: the 99.99th percentile of chi-square with 59 degrees of freedom is about 111.
        Assert.True(chi2 < 111, $"chi-square {chi2:F1} over {allowed.Length} tokens");
        var greedy = new SamplerChain(new SamplingOptions { Temperature = 0 }, 512);
        Assert.Equal(allowed.MaxBy(i => logits[i]), greedy.Sample(logits, m, int.MaxValue));
    }

    /// <summary>End to end through a random-weight model with the V3 vocabulary: every reply is JSON, sampled or
    /// greedy, plain or speculative, even when the token limit cuts it short.</summary>
    [Fact]
    public async Task Generator_replies_are_json_under_json_object_and_a_schema()
    {
        using var gen = new Generator(DeepSeekModel.Load(RandomModel.V3Tiny), Tokenizer.Load(RandomModel.V3Tiny), 256);
        JsonSchema schema = JsonSchema.FromText(OrderSchema);
        OutputFormat order = OutputFormat.JsonSchema(JsonDocument.Parse(OrderSchema).RootElement);
        for (int i = 0; i < 12; i++)
        {
            var options = new GenerationOptions
            {
                Format = i % 2 == 0 ? OutputFormat.JsonObject : order,
                MaxTokens = i % 2 == 0 ? 8 + 4 * i : 64 + 8 * i, // the schema's shortest value is 53 bytes
                Sampling = new SamplingOptions { Temperature = i % 3 == 0 ? 0 : 1, Seed = (ulong)i },
                Speculation = i % 4 == 1 ? Speculation.Mtp : Speculation.Off,
            };
            string text;
            try { text = await Collect(gen.CompleteAsync("Reply in JSON:", options)); }
            catch (Exception e) { throw new Exception($"case {i}", e); }
            using JsonDocument doc = JsonDocument.Parse(text);
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
            if (options.Format == order) Assert.True(schema.Evaluate(doc.RootElement).IsValid, text);
        }
    }

    /// <summary>The acceptance run: 1,000 generations by a random-weight model (r1-tiny's shape and tokenizer, sampled
    /// at temperature 1, batched) under JSON mode and 1,000 under the schema — every one parses, and validates.</summary>
    [Theory]
    [InlineData("json_object", 48)]
    [InlineData("schema", 64)] // ≥ the schema's shortest value (53 bytes), so every generation can finish
    public async Task A_thousand_random_weight_generations_all_parse(string format, int maxTokens)
    {
        using var engine = new BatchScheduler(DeepSeekModel.Load(RandomModel.R1TinyShape), Tokenizer.Load(RandomModel.R1TinyShape),
            new BatchOptions { MaxBatch = 32, ContextLength = 160 });
        JsonSchema schema = JsonSchema.FromText(OrderSchema);
        OutputFormat f = format == "schema" ? OutputFormat.JsonSchema(JsonDocument.Parse(OrderSchema).RootElement) : OutputFormat.JsonObject;
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        int total = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, 1000), new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (i, ct) =>
        {
            var options = new GenerationOptions { Format = f, MaxTokens = maxTokens, Sampling = new SamplingOptions { Seed = (ulong)i } };
            string text = await Collect(engine.GenerateAsync(engine.RawPrompt($"Order {i}:"), options, ct));
            try
            {
                using JsonDocument doc = JsonDocument.Parse(text);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || format == "schema" && !schema.Evaluate(doc.RootElement).IsValid) failures.Add(text);
            }
            catch (JsonException) { failures.Add(text); }
            Interlocked.Increment(ref total);
        });
        Assert.Equal(1000, total);
        Assert.True(failures.IsEmpty, $"{failures.Count} failed, e.g. {failures.FirstOrDefault()}");
    }

    private static async Task<string> Collect(IAsyncEnumerable<GenerationUpdate> updates)
    {
        var sb = new System.Text.StringBuilder();
        await foreach (GenerationUpdate u in updates) sb.Append(u.Text);
        return sb.ToString();
    }
}
