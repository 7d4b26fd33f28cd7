namespace DeepSeekSharp.Model;

/// <summary>Rotary frequencies of the decoupled rotary part (qk_rope_head_dim), with YaRN when configured:
/// inv_freq_i = f_i / factor · ramp_i + f_i · (1 − ramp_i), f_i = θ^(−2i/d), ramp over the correction range from
/// beta_fast/beta_slow. Applied at every position, as HF does whenever rope_scaling.type is yarn.</summary>
public sealed class RotaryEmbedding
{
    private readonly double[] _invFreq; // [d/2]
    private readonly double _cosSinScale;

    public RotaryEmbedding(ModelConfig c)
    {
        int d = c.QkRopeHeadDim, half = d / 2;
        _invFreq = new double[half];
        for (int i = 0; i < half; i++) _invFreq[i] = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / d);
        _cosSinScale = 1.0;
        if (c.Yarn is { } y)
        {
            double CorrectionDim(double rotations) =>
                d * Math.Log(y.OriginalMaxPositionEmbeddings / (rotations * 2 * Math.PI)) / (2 * Math.Log(c.RopeTheta));
            double low = Math.Max(Math.Floor(CorrectionDim(y.BetaFast)), 0);
            double high = Math.Min(Math.Ceiling(CorrectionDim(y.BetaSlow)), d - 1);
            if (low == high) high += 0.001;
            for (int i = 0; i < half; i++)
            {
                double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
                _invFreq[i] = _invFreq[i] / y.Factor * ramp + _invFreq[i] * (1 - ramp);
            }
            // HF multiplies cos/sin by yarn_mscale(mscale) / yarn_mscale(mscale_all_dim); 1 in every released config.
            _cosSinScale = ModelConfig.YarnMscale(y.Factor, y.Mscale) / ModelConfig.YarnMscale(y.Factor, y.MscaleAllDim);
        }
    }

    public int Pairs => _invFreq.Length;

    /// <summary>Fills cos/sin [Pairs] for one position.</summary>
    public void CosSin(int position, Span<float> cos, Span<float> sin)
    {
        for (int i = 0; i < _invFreq.Length; i++)
        {
            double angle = position * _invFreq[i];
            cos[i] = (float)(Math.Cos(angle) * _cosSinScale);
            sin[i] = (float)(Math.Sin(angle) * _cosSinScale);
        }
    }
}
