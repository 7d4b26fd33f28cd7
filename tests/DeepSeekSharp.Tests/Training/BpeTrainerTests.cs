using System.Text.Json;
using System.Text.Json.Nodes;
using DeepSeekSharp.Text;
using DeepSeekSharp.Training.Tasks;
using DeepSeekSharp.Training.Tokenization;

namespace DeepSeekSharp.Tests.Training;

/// <summary>A small byte-level BPE vocabulary trained on the arithmetic corpus loads in the engine's tokenizer,
/// round-trips any text (including text it never saw), keeps the special and reasoning tokens whole, and is the same
/// for the same corpus.</summary>
public class BpeTrainerTests
{
    private static JsonElement V3PreTokenizer()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "assets", "tokenizers", "deepseek-v3", "tokenizer.json");
        using JsonDocument d = JsonDocument.Parse(File.ReadAllText(path));
        return d.RootElement.GetProperty("pre_tokenizer").Clone();
    }

    private static IEnumerable<string> Corpus() =>
        Arithmetic.Generate(Split.Train, 1500, seed: 1).Select(p => p.Question + "\n" + Arithmetic.Solution(p));

    private static Tokenizer Load(TempDir dir, JsonObject tokenizerJson)
    {
        File.WriteAllText(dir.File("tokenizer.json"), tokenizerJson.ToJsonString());
        File.WriteAllText(dir.File("tokenizer_config.json"), """
            {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>", "add_bos_token": true,
             "chat_template": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}{% else %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"}
            """);
        return Tokenizer.Load(dir.Path);
    }

    [Fact]
    public void ATrainedVocabulary_LoadsAndRoundTrips()
    {
        using var dir = new TempDir();
        JsonObject json = BpeTrainer.Train(Corpus(), 600, V3PreTokenizer());
        Tokenizer tok = Load(dir, json);
        Assert.Equal(600, tok.VocabSize);
        Assert.Equal(0, tok.BosId);
        Assert.Equal(1, tok.EosId);
        foreach (string special in new[] { "<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>" })
            Assert.Single(tok.Encode(special, addBos: false));
        foreach (string text in new[] { "What is 452 + 379?", "Compute 610 - 47.", "Ünïcödé, emoji 🙂 and 中文 never seen", "<think>\nwork\n</think>\n\n831" })
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: false)));
        // Merges were learnt: the corpus compresses well below a byte per token.
        var samples = Arithmetic.Generate(Split.Heldout, 50, seed: 9).Select(Arithmetic.Solution).ToList();
        int tokens = samples.Sum(x => tok.Encode(x, addBos: false).Length), bytes = samples.Sum(System.Text.Encoding.UTF8.GetByteCount);
        Assert.True(tokens * 2 < bytes, $"{tokens} tokens for {bytes} bytes");
        // Deterministic for a corpus.
        Assert.Equal(json.ToJsonString(), BpeTrainer.Train(Corpus(), 600, V3PreTokenizer()).ToJsonString());
    }

    [Fact]
    public void TooSmallAVocabulary_IsRefused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => BpeTrainer.Train(["x"], 100, V3PreTokenizer()));
}
