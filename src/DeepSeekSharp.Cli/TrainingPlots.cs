using DeepSeekSharp.Training;

namespace DeepSeekSharp.Cli;

/// <summary>PNG plots of a run's metrics (ScottPlot): losses, learning rate, gradient norm, and each MoE layer's expert
/// load spread (max and min load over the mean). Each file is written whole, then renamed into place (<see cref="Formats.AtomicFile"/>).</summary>
internal static class TrainingPlots
{
    public static void Write(IReadOnlyList<StepMetrics> history, string dir)
    {
        if (history.Count == 0) return;
        Directory.CreateDirectory(dir);
        double[] steps = [.. history.Select(h => (double)h.Step)];
        var val = history.Where(h => h.ValidationLoss is not null).ToList();

        Save(Path.Combine(dir, "loss.png"), "Loss", "cross-entropy (nats)", plot =>
        {
            Line(plot, steps, [.. history.Select(h => h.MainCe)], "train (next token)");
            if (history.Any(h => h.MtpCe > 0)) Line(plot, steps, [.. history.Select(h => h.MtpCe)], "train (MTP, token after next)");
            if (val.Count > 0) Line(plot, [.. val.Select(h => (double)h.Step)], [.. val.Select(h => h.ValidationLoss!.Value)], "validation (next token)", markers: true);
        });
        Save(Path.Combine(dir, "lr.png"), "Learning rate", "lr", plot => Line(plot, steps, [.. history.Select(h => h.Lr)], "lr"));
        Save(Path.Combine(dir, "grad_norm.png"), "Gradient norm (before clipping)", "global L2 norm",
            plot => Line(plot, steps, [.. history.Select(h => h.GradNorm)], "grad norm"));
        if (history[0].Load.Count > 0)
            Save(Path.Combine(dir, "expert_load.png"), "Expert load spread per MoE layer", "load / mean load", plot =>
            {
                for (int i = 0; i < history[0].Load.Count; i++)
                {
                    int layer = history[0].Load[i].Layer;
                    Line(plot, steps, [.. history.Select(h => h.Load[i].MaxOverMean)], $"layer {layer} max");
                    Line(plot, steps, [.. history.Select(h => h.Load[i].MinOverMean)], $"layer {layer} min");
                }
            });
    }

    /// <summary>GRPO's curves: rollout reward and accuracy with held-out greedy accuracy, reply length, KL to the
    /// reference.</summary>
    public static void WriteGrpo(IReadOnlyList<GrpoMetrics> history, string dir)
    {
        if (history.Count == 0) return;
        Directory.CreateDirectory(dir);
        double[] steps = [.. history.Select(h => (double)h.Step)];
        var evals = history.Where(h => h.HeldoutAccuracy is not null).ToList();
        Save(Path.Combine(dir, "reward.png"), "GRPO: reward and accuracy", "mean over the step's samples", plot =>
        {
            Line(plot, steps, [.. history.Select(h => h.Reward)], "reward (rollouts, T 1.0)");
            Line(plot, steps, [.. history.Select(h => h.Accuracy)], "accuracy (rollouts, T 1.0)");
            Line(plot, steps, [.. history.Select(h => h.FormatRate)], "well-formed (rollouts)");
            if (evals.Count > 0)
            {
                double[] at = [.. evals.Select(h => (double)h.Step)];
                Line(plot, at, [.. evals.Select(h => h.HeldoutAccuracy!.Value)], "held-out 1–3 digits (greedy)", markers: true);
                Line(plot, at, [.. evals.Select(h => h.HarderAccuracy ?? double.NaN)], "held-out 4 digits (greedy)", markers: true);
            }
        });
        Save(Path.Combine(dir, "length.png"), "GRPO: reply length", "tokens per reply", plot => Line(plot, steps, [.. history.Select(h => h.MeanLength)], "mean reply length"));
        Save(Path.Combine(dir, "kl.png"), "GRPO: KL to the cold-start model (k3)", "mean per token", plot => Line(plot, steps, [.. history.Select(h => h.Kl)], "KL"));
    }

    private static void Line(ScottPlot.Plot plot, double[] xs, double[] ys, string label, bool markers = false)
    {
        var s = plot.Add.Scatter(xs, ys);
        s.LegendText = label;
        s.MarkerSize = markers ? 5 : 0;
    }

    private static void Save(string path, string title, string yLabel, Action<ScottPlot.Plot> draw)
    {
        var plot = new ScottPlot.Plot();
        draw(plot);
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Edge.Right); // beside the data, never over the end of a curve
        Formats.AtomicFile.Write(path, s => s.Write(plot.GetImageBytes(1100, 500, ScottPlot.ImageFormat.Png)));
    }
}
