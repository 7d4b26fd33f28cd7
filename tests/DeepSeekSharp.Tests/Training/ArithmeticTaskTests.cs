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
        // Harder problems have one digit more and sit on the held-out side of the hash, so GRPO's four-digit training
        // problems never include them.
        Assert.All(Arithmetic.Generate(Split.Harder, 200, seed: 1), p =>
        {
            Assert.Equal(Arithmetic.MaxTrainDigits + 1, p.Digits);
            Assert.Equal(Split.Heldout, Arithmetic.SplitOf(p.Op, p.A, p.B));
        });
        Assert.All(Arithmetic.Generate(Split.Train, 200, seed: 1, minDigits: 4, maxDigits: 4), p =>
        {
            Assert.Equal(4, p.Digits);
            Assert.Equal(Split.Train, Arithmetic.SplitOf(p.Op, p.A, p.B));
        });
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

    private static readonly Regex AddLine = new(@": (\d) \+ (\d)( \+ 1)? = (\d+), write (\d)(, carry 1)?\. So far (\d+)\.");
    private static readonly Regex SubLine = new(@": (?:(\d) - 1 = (-?\d), )?(-?\d) - (\d)(?:, borrow 10: (\d+) - (\d))? = (\d+), write (\d)\. So far (\d+)\.");
    private static readonly Regex MulLine = new(@": (\d) \* (\d) = (\d+)(?:, (\d+) \+ (\d) = (\d+))?, write (\d+)(?:, carry (\d))?\. So far (\d+)\.");
    private static readonly Regex NextLine = new(@"^Next (\d+) [-+*] (\d+)", RegexOptions.Multiline);
    private static readonly Regex SoFar = new(@"So far (\d+)\.");

    [Fact]
    public void EveryWorkedSolution_IsRightLineByLine_AndPassesTheVerifier()
    {
        foreach (Problem p in Arithmetic.Generate(Split.Train, 2000, seed: 3).Concat(Arithmetic.Generate(Split.Harder, 300, seed: 3)))
        {
            string s = Arithmetic.Solution(p);
            Assert.Equal((true, true), Arithmetic.Verify(s, p.Answer));
            Assert.Contains($"So {p.A} {Arithmetic.Symbol(p.Op)} {p.B} = {p.Answer}.", s);
            Regex line = p.Op switch { Operation.Add => AddLine, Operation.Subtract => SubLine, _ => MulLine };
            MatchCollection columns = line.Matches(s);
            Assert.Equal(SoFar.Matches(s).Count, columns.Count); // every column line parses
            foreach (Match m in columns)
            {
                int G(int i) => int.Parse(m.Groups[i].Value);
                switch (p.Op)
                {
                    case Operation.Add:
                        Assert.Equal(G(1) + G(2) + (m.Groups[3].Success ? 1 : 0), G(4));
                        Assert.Equal(G(4) % 10, G(5));
                        Assert.Equal(G(4) >= 10, m.Groups[6].Success);
                        break;
                    case Operation.Subtract:
                        if (m.Groups[1].Success) Assert.Equal(G(1) - 1, G(2));
                        if (m.Groups[5].Success) { Assert.True(G(3) < G(4)); Assert.Equal(G(3) + 10, G(5)); Assert.Equal(G(5) - G(6), G(7)); }
                        else Assert.Equal(G(3) - G(4), G(7));
                        Assert.Equal(G(7), G(8));
                        break;
                    default:
                        Assert.Equal(G(1) * G(2), G(3));
                        if (m.Groups[4].Success) Assert.Equal(G(4) + G(5), G(6));
                        int value = m.Groups[4].Success ? G(6) : G(3);
                        Assert.Equal(m.Groups[8].Success ? value % 10 : value, G(7));
                        if (m.Groups[8].Success) Assert.Equal(value / 10, G(8));
                        break;
                }
            }
            // The result so far grows by one column at a time and ends as the answer (leading zeros aside).
            string last = SoFar.Matches(s)[^1].Groups[1].Value;
            Assert.Equal(p.Answer, long.Parse(last));
            // Each "Next" line holds what is left of the operands: one more digit dropped per column.
            long div = 10;
            foreach (Match m in NextLine.Matches(s))
            {
                Assert.Equal(p.A / div, long.Parse(m.Groups[1].Value));
                Assert.Equal(p.Op == Operation.Multiply ? p.B : p.B / div, long.Parse(m.Groups[2].Value));
                div *= 10;
            }
        }
    }

    [Fact]
    public void ThePhrasingSplit_AsksHeldoutProblems_InWordingsTrainingNeverUses()
    {
        var unseen = Arithmetic.Generate(Split.Phrasing, 300, seed: 5);
        Assert.All(unseen, p => Assert.Equal(Split.Heldout, Arithmetic.SplitOf(p.Op, p.A, p.B)));
        // The words around the numbers, with the numbers taken out.
        static string Frame(Problem p) => Regex.Replace(p.Question, @"\d+", "#");
        var trainFrames = Arithmetic.Generate(Split.Train, 20000, seed: 5).Concat(Arithmetic.Generate(Split.Train, 20000, seed: 5, varied: true))
            .Select(Frame).ToHashSet();
        Assert.DoesNotContain(unseen, p => trainFrames.Contains(Frame(p)));
        // Nor do the unseen sentences share their opening words with any training question.
        static string Opening(Problem p) => string.Join(' ', p.Question.ToLowerInvariant().Split(' ').Take(2));
        var trainOpenings = trainFrames.Select(f => string.Join(' ', f.ToLowerInvariant().Split(' ').Take(2))).ToHashSet();
        Assert.DoesNotContain(unseen, p => !p.Question.StartsWith(p.A.ToString(), StringComparison.Ordinal) && trainOpenings.Contains(Opening(p)));
        Assert.Contains(unseen, p => p.WordProblem);
        Assert.Contains(unseen, p => !p.WordProblem);
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
