namespace DeepSeekSharp.Inference.Sampling;

/// <summary>How the next token is chosen. Defaults: temperature 1, every filter and penalty off. Order of
/// application (as Hugging Face transformers and vLLM): penalties → logit bias → temperature → top-k → top-p →
/// min-p → draw. Temperature 0 is greedy (argmax after penalties and bias).</summary>
public sealed record SamplingOptions
{
    /// <summary>[0, 2]; 0 = greedy.</summary>
    public float Temperature { get; init; } = 1f;
    /// <summary>Keep the k most likely tokens; 0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>(0, 1]: keep the smallest set whose probability reaches p; 1 = off.</summary>
    public float TopP { get; init; } = 1f;
    /// <summary>[0, 1]: drop tokens less likely than min_p × the most likely one; 0 = off.</summary>
    public float MinP { get; init; }
    /// <summary>(0, 10]: divide positive logits (multiply negative ones) of tokens seen in the window; 1 = off.</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    /// <summary>[-2, 2]: subtract from the logit of every token seen in the window (OpenAI).</summary>
    public float PresencePenalty { get; init; }
    /// <summary>[-2, 2]: subtract count × this from the logit of tokens seen in the window (OpenAI).</summary>
    public float FrequencyPenalty { get; init; }
    /// <summary>How many recent tokens the penalties look at; -1 = the whole sequence.</summary>
    public int PenaltyWindow { get; init; } = 64;
    /// <summary>Added to the logits of these token ids before sampling (OpenAI logit_bias, [-100, 100]).</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
    /// <summary>Seed of our own RNG; the same seed gives the same tokens on any machine. Null = random.</summary>
    public ulong? Seed { get; init; }

    public bool IsGreedy => Temperature == 0;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the option and its range.</summary>
    public void Validate(int vocabSize)
    {
        Range(nameof(Temperature), "temperature", Temperature, 0, 2);
        if (TopK < 0) throw new ArgumentOutOfRangeException("top_k", TopK, "'top_k' must be ≥ 0 (0 = off)");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException("top_p", TopP, "'top_p' must be in (0, 1]");
        Range(nameof(MinP), "min_p", MinP, 0, 1);
        if (!(RepetitionPenalty > 0 && RepetitionPenalty <= 10)) throw new ArgumentOutOfRangeException("repetition_penalty", RepetitionPenalty, "'repetition_penalty' must be in (0, 10]");
        Range(nameof(PresencePenalty), "presence_penalty", PresencePenalty, -2, 2);
        Range(nameof(FrequencyPenalty), "frequency_penalty", FrequencyPenalty, -2, 2);
        if (PenaltyWindow < -1) throw new ArgumentOutOfRangeException("penalty_window", PenaltyWindow, "'penalty_window' must be ≥ -1");
        if (LogitBias is not null)
            foreach (var (id, bias) in LogitBias)
            {
                if ((uint)id >= (uint)vocabSize) throw new ArgumentOutOfRangeException("logit_bias", id, $"'logit_bias' names token {id}, outside [0, {vocabSize})");
                if (!(bias >= -100 && bias <= 100)) throw new ArgumentOutOfRangeException("logit_bias", bias, $"'logit_bias' for token {id} must be in [-100, 100], got {bias}");
            }
    }

    private static void Range(string _, string name, float value, float min, float max)
    {
        if (!(value >= min && value <= max))
            throw new ArgumentOutOfRangeException(name, value, $"'{name}' must be in [{min}, {max}], got {value}");
    }
}
