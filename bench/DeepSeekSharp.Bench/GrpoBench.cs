using DeepSeekSharp.Training;

namespace DeepSeekSharp.Bench;

/// <summary>A few GRPO steps from a cold-start model (<c>dss train --recipe r1-tiny</c>'s stage 1), printing each
/// step's numbers and its time, to size the recipe's stage 2.</summary>
internal static class GrpoBench
{
    public static void Run(string model, string outDir, int steps)
    {
        var trainer = new GrpoTrainer(new GrpoConfig { Steps = steps, EvalSamples = 0 }, model, outDir);
        trainer.Run(m => Console.WriteLine(
            $"step {m.Step}: reward {m.Reward:F3} accuracy {m.Accuracy:P1} well-formed {m.FormatRate:P1} length {m.MeanLength:F0} KL {m.Kl:F5} " +
            $"loss {m.Loss:F4} groups {m.Groups}/{m.Groups + m.Skipped} grad norm {m.GradNorm:F3} {m.Seconds:F1} s ({m.RolloutSeconds:F1} s rollouts)"));
    }
}
