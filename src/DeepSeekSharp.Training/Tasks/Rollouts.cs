using DeepSeekSharp.Inference.Sampling;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Training.Tasks;

/// <summary>One sampled completion: its token ids (what GRPO scores, not a re-tokenisation of the text) and whether it
/// ended with end-of-sequence rather than at the length limit.</summary>
public sealed record Rollout(int[] Ids, bool Ended);

/// <summary>G completions of one prompt for GRPO: the prompt is run once, then each completion decodes from a copy of
/// its cache position with its own seeded sampler (seed + i), so a group is reproducible and its members differ.</summary>
public static class Rollouts
{
    public static List<Rollout> Sample(DeepSeekModel model, ReadOnlySpan<int> prompt, int count, SamplingOptions sampling, int maxTokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxTokens);
        if (prompt.IsEmpty) throw new ArgumentException("the prompt is empty", nameof(prompt));
        int vocab = model.Config.VocabSize, capacity = prompt.Length + maxTokens;
        if (capacity > model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, $"prompt ({prompt.Length}) + max tokens exceed max_position_embeddings ({model.Config.MaxPositionEmbeddings})");
        using InferenceSession session = model.CreateSession(capacity);
        float[] promptLogits = new float[vocab], logits = new float[vocab];
        session.Forward(prompt, promptLogits, allPositions: false);
        int[] one = new int[1];
        var result = new List<Rollout>(count);
        for (int g = 0; g < count; g++)
        {
            session.Cache.Truncate(prompt.Length);
            var chain = new SamplerChain(sampling with { Seed = (sampling.Seed ?? 0) + (ulong)g }, vocab, capacity);
            promptLogits.CopyTo(logits, 0);
            var ids = new List<int>();
            bool ended = false;
            while (ids.Count < maxTokens)
            {
                int t = chain.Sample(logits);
                chain.Accept(t);
                ids.Add(t);
                if (t == model.Config.EosTokenId) { ended = true; break; }
                if (ids.Count == maxTokens) break;
                one[0] = t;
                session.Forward(one, logits, allPositions: false);
            }
            result.Add(new Rollout([.. ids], ended));
        }
        return result;
    }
}
