using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Training.Tasks;

/// <summary>One problem's outcome.</summary>
public sealed record EvalResult(Problem Problem, string Completion, bool WellFormed, bool Correct, int CompletionTokens, int ReasoningTokens);

/// <summary>Accuracy by difficulty, format rate and lengths over a set of results.</summary>
public sealed record EvalSummary(int Count, double Accuracy, double FormatRate, double MeanCompletionTokens, double MeanReasoningTokens,
    IReadOnlyDictionary<int, (int Count, double Accuracy)> ByDigits)
{
    public static EvalSummary Of(IReadOnlyList<EvalResult> r) => new(
        r.Count,
        r.Count == 0 ? 0 : r.Average(x => x.Correct ? 1.0 : 0),
        r.Count == 0 ? 0 : r.Average(x => x.WellFormed ? 1.0 : 0),
        r.Count == 0 ? 0 : r.Average(x => x.CompletionTokens),
        r.Count == 0 ? 0 : r.Average(x => x.ReasoningTokens),
        r.GroupBy(x => x.Problem.Digits).OrderBy(g => g.Key).ToDictionary(g => g.Key, g => (g.Count(), g.Average(x => x.Correct ? 1.0 : 0))));
}

/// <summary>Asks a model each problem as a user message through its chat template (R1's opens the reply inside
/// <c>&lt;think&gt;</c>) and checks the reply with <see cref="Arithmetic.Verify"/>: how <c>dss eval</c> measures.</summary>
public static class TaskEvaluation
{
    /// <summary>Refuses a model that cannot produce R1's format.</summary>
    public static void CheckReasoningTokens(Tokenizer tokenizer)
    {
        foreach (string tag in new[] { ReasoningParser.OpenTag, ReasoningParser.CloseTag })
            if (tokenizer.TryTokenToId(tag) is null)
                throw new InvalidDataException($"the model's tokenizer has no {tag} token: it cannot reason in R1's format");
    }

    public static async Task<EvalResult> SolveAsync(IGenerationEngine engine, Problem p, GenerationOptions options, CancellationToken ct = default)
    {
        JsonElement messages = JsonSerializer.SerializeToElement(new[] { new { role = "user", content = p.Question } });
        var reasoning = new StringBuilder();
        var answer = new StringBuilder();
        GenerationUsage? usage = null;
        bool closed = false;
        await foreach (GenerationUpdate u in engine.ChatAsync(messages, options, ct))
        {
            if (u.Usage is not null) { usage = u.Usage; continue; }
            if (u.Part == ReplyPart.Reasoning) reasoning.Append(u.Text);
            else { closed = true; answer.Append(u.Text); }
        }
        // The reply parser splits at </think>; put the text back together as the model wrote it.
        string completion = closed ? reasoning + ReasoningParser.CloseTag + answer : reasoning.ToString();
        var (wellFormed, correct) = Arithmetic.Verify(completion, p.Answer);
        return new EvalResult(p, completion, wellFormed, correct, usage?.CompletionTokens ?? 0, usage?.ReasoningTokens ?? 0);
    }
}
