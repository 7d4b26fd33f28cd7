using System.Text.RegularExpressions;
using DeepSeekSharp.Training.Tasks;

namespace DeepSeekSharp.Tests.Training;

/// <summary>The arithmetic task of R1's recipe: problems are reproducible by seed, splits never share a problem, every
/// worked solution is arithmetically right line by line, and the verifier scores format and answer as defined.</summary>
public class ArithmeticTaskTests
{
    [Fact]
    public void Problems_AreReproducibleBySeed_AndSplitsAreDisjoint()
    {
        var train = Arithmetic.Generate(Split.Train, 3000, seed: 1);
        Assert.Equal(train, Arithmetic.Generate(Split.Train, 3000, seed: 1));
        // The split is a pure function of the problem (the same in every process): the documented mixing hash.
        for (long a = 0; a < 60; a++)
            foreach (Operation op in Enum.GetValues<Operation>())
            {
                ulong h = ((ulong)op * 0x9E3779B97F4A7C15UL) ^ ((ulong)a * 0xBF58476D1CE4E5B9UL) ^ ((ulong)(a * 7 + 3) * 0x94D049BB133111EBUL);
                h ^= h >> 31; h *= 0xD6E8FEB86659FD93UL; h ^= h >> 32;
                Assert.Equal(h % 10 == 0 ? Split.Heldout : Split.Train, Arithmetic.SplitOf(op, a, a * 7 + 3));
            }
        Assert.NotEqual(train.Select(p => p.Question), Arithmetic.Generate(Split.Train, 3000, seed: 2).Select(p => p.Question));
        var heldout = Arithmetic.Generate(Split.Heldout, 500, seed: 1);
        var trainKeys = train.Select(p => (p.Op, p.A, p.B)).ToHashSet();
        Assert.DoesNotContain(heldout, p => trainKeys.Contains((p.Op, p.A, p.B)));
        Assert.All(train.Concat(heldout), p => Assert.InRange(p.Digits, 1, Arithmetic.MaxTrainDigits));
        Assert.All(Arithmetic.Generate(Split.Harder, 200, seed: 1), p => Assert.Equal(Arithmetic.MaxTrainDigits + 1, p.Digits));
        Assert.All(train, p => Assert.Equal(Arithmetic.Apply(p.Op, p.A, p.B), p.Answer));
        Assert.All(train.Where(p => p.Op == Operation.Subtract), p => Assert.True(p.Answer >= 0));
        // Every operation, both phrasings and every difficulty occur.
        foreach (Operation op in Enum.GetValues<Operation>())
            for (int d = 1; d <= Arithmetic.MaxTrainDigits; d++)
            {
                Assert.Contains(train, p => p.Op == op && p.Digits == d && p.WordProblem);
                Assert.Contains(train, p => p.Op == op && p.Digits == d && !p.WordProblem);
            }
    }

    private static readonly Regex AddLine = new(@": (\d) \+ (\d)( \+ 1)? = (\d+), write (\d)");
    private static readonly Regex SubLine = new(@": (-?\d)( \+ 10)? - (\d) = (\d+), write (\d)");
    private static readonly Regex MulLine = new(@"^(\d+) \* (\d+) = (\d+)\.$", RegexOptions.Multiline);

    [Fact]
    public void EveryWorkedSolution_IsRightLineByLine_AndPassesTheVerifier()
    {
        foreach (Problem p in Arithmetic.Generate(Split.Train, 2000, seed: 3).Concat(Arithmetic.Generate(Split.Harder, 300, seed: 3)))
        {
            string s = Arithmetic.Solution(p);
            Assert.Equal((true, true), Arithmetic.Verify(s, p.Answer));
            Assert.Contains($"So {p.A} {Arithmetic.Symbol(p.Op)} {p.B} = {p.Answer}.", s);
            foreach (Match m in AddLine.Matches(s))
            {
                int sum = int.Parse(m.Groups[1].Value) + int.Parse(m.Groups[2].Value) + (m.Groups[3].Success ? 1 : 0);
                Assert.Equal(sum, int.Parse(m.Groups[4].Value));
                Assert.Equal(sum % 10, int.Parse(m.Groups[5].Value));
            }
            foreach (Match m in SubLine.Matches(s))
                Assert.Equal(int.Parse(m.Groups[1].Value) + (m.Groups[2].Success ? 10 : 0) - int.Parse(m.Groups[3].Value), int.Parse(m.Groups[4].Value));
            foreach (Match m in MulLine.Matches(s))
                Assert.Equal(long.Parse(m.Groups[1].Value) * long.Parse(m.Groups[2].Value), long.Parse(m.Groups[3].Value));
        }
    }

    [Theory]
    [InlineData("two and two make four\n</think>\n\nThe answer is 4.", 4, true, true)]
    [InlineData("<think>\nwork\n</think>\n\n4", 4, true, true)]
    [InlineData("work\n</think>\n\nThe answer is 5.", 4, true, false)]
    [InlineData("work\n</think>\n\nThe answer is 1,234.", 1234, true, true)]
    [InlineData("work\n</think>\n\n-17", -17, true, true)]
    [InlineData("The answer is 4.", 4, false, false)]                      // no reasoning block
    [InlineData("\n</think>\n\n4", 4, false, true)]                          // empty reasoning
    [InlineData("a</think>b</think> 4", 4, false, false)]                    // two closing tags
    [InlineData("work</think>\n\nno number", 4, false, false)]
    [InlineData("work <think> more</think> 4", 4, false, false)]            // an opening tag mid-way
    public void Verifier_ScoresFormatAndAnswer(string completion, long answer, bool wellFormed, bool correct)
    {
        Assert.Equal((wellFormed, correct), Arithmetic.Verify(completion, answer));
        double reward = Arithmetic.Reward(completion, answer);
        Assert.Equal(correct ? 1.0 : wellFormed ? 0.1 : 0.0, reward);
    }
}
