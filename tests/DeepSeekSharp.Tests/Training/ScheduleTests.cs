using DeepSeekSharp.Training;

namespace DeepSeekSharp.Tests.Training;

public class ScheduleTests
{
    [Fact]
    public void LrSchedule_WarmsUpLinearly_ThenFollowsTheCosineToTheMinimum()
    {
        var s = new LrSchedule(PeakLr: 1e-3, MinLr: 1e-4, WarmupSteps: 4, TotalSteps: 14);
        Assert.Equal([2.5e-4, 5e-4, 7.5e-4, 1e-3], Enumerable.Range(0, 4).Select(s.At).ToArray());
        Assert.Equal(1e-3, s.At(4), 1e-15);                          // cosine starts at the peak
        Assert.Equal(1e-4 + 0.5 * 9e-4, s.At(9), 1e-15);             // half way: midpoint
        Assert.Equal(1e-4, s.At(14), 1e-15);
        Assert.Equal(1e-4, s.At(1000), 1e-15);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(-1));
    }

    [Fact]
    public void Clip_ScalesEveryTensorByTheGlobalNorm_OnlyAboveTheLimit()
    {
        float[] a = [3f, 0f], b = [4f];                               // global norm 5
        double norm = GradientClipping.Clip([a, b], maxNorm: 1.0);
        Assert.Equal(5.0, norm, 1e-12);
        Assert.Equal(0.6, a[0], 1e-5);
        Assert.Equal(0.8, b[0], 1e-5);
        float[] c = [0.3f, 0.4f];
        Assert.Equal(0.5, GradientClipping.Clip([c], maxNorm: 1.0), 1e-6);
        Assert.Equal([0.3f, 0.4f], c);                                // under the limit: untouched
    }
}
