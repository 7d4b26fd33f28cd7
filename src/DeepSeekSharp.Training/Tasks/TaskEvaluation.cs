using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference;
using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;
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

    /// <summary>Asks every problem in turn; <paramref name="progress"/> sees (done, total) after each.</summary>
    public static List<EvalResult> Run(IGenerationEngine engine, IReadOnlyList<Problem> problems, GenerationOptions options,
        Action<int, int>? progress = null, CancellationToken ct = default)
    {
        var results = new List<EvalResult>(problems.Count);
        foreach (Problem p in problems)
        {
            results.Add(SolveAsync(engine, p, options, ct).GetAwaiter().GetResult());
            progress?.Invoke(results.Count, problems.Count);
        }
        return results;
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

/// <summary>How often the MTP module's draft of the token after next equals the token the main model then picks
/// greedily: over greedy replies, at every position i whose token i + 2 lies in the reply, argmax MTP(h_i, t_{i+1})
/// against argmax main(i + 1). This is the acceptance rate of one-token MTP speculation under greedy decoding.</summary>
public static class MtpAgreement
{
    public static double? Measure(DeepSeekModel model, Tokenizer tokenizer, IEnumerable<Problem> problems, int maxTokens = 320)
    {
        if (model.MtpLayers == 0) return null;
        var template = Text.Templates.ChatTemplate.Parse(tokenizer.Config.ChatTemplate ?? throw new InvalidDataException("the tokenizer has no chat template"));
        int vocab = model.Config.VocabSize, agree = 0, total = 0;
        foreach (Problem p in problems)
        {
            int[] prompt = tokenizer.Encode(R1Data.Example(p, template).Prompt, addBos: false);
            int limit = Math.Min(maxTokens, model.Config.MaxPositionEmbeddings - prompt.Length);
            Rollout reply = Rollouts.Sample(model, prompt, 1, new SamplingOptions { Temperature = 0 }, limit)[0];
            int[] seq = [.. prompt, .. reply.Ids];
            int n = seq.Length;
            if (n - prompt.Length < 2) continue;
            using InferenceSession s = model.CreateSession(n);
            var logits = new float[n * vocab];
            s.Forward(seq, logits);
            float[] hidden = s.LastHidden.ToArray();
            var mtp = new float[(n - 1) * vocab];
            s.ForwardMtp(seq.AsSpan(1), hidden.AsSpan(0, (n - 1) * model.Config.Dim), mtp);
            // Position i drafts token i + 2; count the drafts of reply tokens (i + 2 ≥ prompt length).
            for (int i = Math.Max(0, prompt.Length - 2); i + 2 < n; i++)
            {
                total++;
                if (DeepSeekSharp.Kernels.TopK.ArgMax(mtp.AsSpan(i * vocab, vocab)) == DeepSeekSharp.Kernels.TopK.ArgMax(logits.AsSpan((i + 1) * vocab, vocab))) agree++;
            }
        }
        return total == 0 ? null : (double)agree / total;
    }
}
