using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Training.Tasks;

/// <summary>Which problems a split holds. Train and held-out share difficulties 1–3 but never a problem (a problem's
/// split follows from a hash of its operands); the harder split holds held-out problems with one digit more than the
/// cold start ever sees (GRPO may train on four-digit problems of the train side of the hash); the unseen-phrasing
/// split asks held-out problems in wordings the training data never uses.</summary>
public enum Split { Train, Heldout, Harder, Phrasing }

public enum Operation { Add, Subtract, Multiply }

/// <summary>One problem: the question as a user would ask it, its exact answer, and how it was made.</summary>
public sealed record Problem(string Question, long Answer, Operation Op, long A, long B, int Digits, bool WordProblem);

/// <summary>Arithmetic with exact answers, for R1's recipe: multi-digit addition and subtraction and multiplication
/// by a one-digit number, asked as expressions ("What is 452 + 379?") or as short word problems, with difficulty =
/// digits of the larger operand. Deterministic for a seed.</summary>
public static class Arithmetic
{
    public const int MaxTrainDigits = 3;

    private static readonly string[] Names = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Ben", "Ivy", "Max", "Eva", "Tom"];
    private static readonly string[] Things = ["stickers", "marbles", "apples", "coins", "stamps", "cards", "books", "shells"];
    private static readonly string[] Forms = ["What is {0}?", "Compute {0}.", "{0} = ?", "Calculate {0}.", "{0}", "Work out {0}.", "Find {0}.", "Solve {0}."];

    // Never used in training: other wordings, other names and things, other sentences around the same numbers.
    private static readonly string[] UnseenNames = ["Ana", "Raj", "Kim", "Noah", "Lily", "Omar"];
    private static readonly string[] UnseenThings = ["pencils", "cookies", "tickets", "bottles", "flowers"];
    private static readonly string[] UnseenForms = ["Hey, what's {0}?", "Quick question: {0}", "Can you calculate {0} for me?", "How much is {0}?",
        "Please compute {0}.", "I need the result of {0}.", "So {0} makes how much?", "Tell me {0}, please."];

    /// <summary>The split a pair of operands belongs to at training difficulties (one in ten is held out), by a fixed
    /// hash (not <see cref="HashCode"/>, which is seeded differently in every process).</summary>
    public static Split SplitOf(Operation op, long a, long b)
    {
        ulong h = ((ulong)op * 0x9E3779B97F4A7C15UL) ^ ((ulong)a * 0xBF58476D1CE4E5B9UL) ^ ((ulong)b * 0x94D049BB133111EBUL);
        h ^= h >> 31; h *= 0xD6E8FEB86659FD93UL; h ^= h >> 32;
        return h % 10 == 0 ? Split.Heldout : Split.Train;
    }

    /// <summary><paramref name="count"/> problems of a split, the same ones for the same seed; difficulties
    /// <paramref name="minDigits"/>..<paramref name="maxDigits"/> (0: the split's own, 1–3, or 4 for harder). With
    /// <paramref name="varied"/> (train only), each question is worded at random from a larger set of greetings,
    /// question words, casings and sentences, none of them the phrasing split's.</summary>
    public static List<Problem> Generate(Split split, int count, ulong seed, int minDigits = 0, int maxDigits = 0, bool varied = false)
    {
        if (varied && split != Split.Train) throw new ArgumentException("varied wordings are for training problems", nameof(varied));
        var rng = new Rng(seed * 0x9E3779B97F4A7C15UL + (ulong)split + 17 + (ulong)(minDigits * 131 + maxDigits));
        int lo = minDigits > 0 ? minDigits : split == Split.Harder ? MaxTrainDigits + 1 : 1;
        int hi = maxDigits > 0 ? maxDigits : split == Split.Harder ? MaxTrainDigits + 1 : MaxTrainDigits;
        if (lo > hi) throw new ArgumentException($"no difficulties in [{lo}, {hi}]");
        var list = new List<Problem>(count);
        while (list.Count < count)
        {
            var op = (Operation)(rng.NextUInt64() % 3);
            int digits = lo + (int)(rng.NextUInt64() % (ulong)(hi - lo + 1));
            long a = Number(rng, digits), b;
            switch (op)
            {
                case Operation.Add: b = Number(rng, 1 + (int)(rng.NextUInt64() % (ulong)digits)); break;
                case Operation.Subtract: b = rng.NextUInt64() % 2 == 0 ? Number(rng, digits) : Number(rng, 1 + (int)(rng.NextUInt64() % (ulong)digits)); if (b > a) (a, b) = (b, a); break;
                default: b = Number(rng, 1); break;
            }
            Split home = split is Split.Phrasing or Split.Harder ? Split.Heldout : split;
            if (SplitOf(op, a, b) != home) continue;
            bool word = rng.NextUInt64() % 3 == 0;
            string question = split == Split.Phrasing ? AskUnseen(rng, op, a, b, word) : varied ? AskVaried(rng, op, a, b, word) : Ask(rng, op, a, b, word);
            list.Add(new Problem(question, Apply(op, a, b), op, a, b, digits, word));
        }
        return list;
    }

    private static long Number(Rng rng, int digits)
    {
        long lo = digits == 1 ? 0 : (long)Math.Pow(10, digits - 1), hi = (long)Math.Pow(10, digits);
        return lo + (long)(rng.NextUInt64() % (ulong)(hi - lo));
    }

    public static long Apply(Operation op, long a, long b) => op switch
    {
        Operation.Add => a + b,
        Operation.Subtract => a - b,
        _ => a * b,
    };

    public static string Symbol(Operation op) => op switch { Operation.Add => "+", Operation.Subtract => "-", _ => "*" };

    private static T Pick<T>(Rng rng, T[] items) => items[rng.NextUInt64() % (ulong)items.Length];

    /// <summary>The expression as people type it: with spaces, or (one time in four) without.</summary>
    private static string Expression(Rng rng, Operation op, long a, long b) =>
        rng.NextUInt64() % 4 == 0 ? $"{a}{Symbol(op)}{b}" : $"{a} {Symbol(op)} {b}";

    private static string Ask(Rng rng, Operation op, long a, long b, bool word)
    {
        if (!word) return string.Format(CultureInfo.InvariantCulture, Pick(rng, Forms), Expression(rng, op, a, b));
        string n = Pick(rng, Names), t = Pick(rng, Things);
        string[] forms = op switch
        {
            Operation.Add => [$"{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?",
                $"{n} had {a} {t}. A friend gave {n} {b} more. How many {t} does {n} have?"],
            Operation.Subtract => [$"{n} has {a} {t} and gives away {b}. How many {t} does {n} have left?",
                $"There were {a} {t}. {n} took {b} of them. How many {t} are left?"],
            _ => [$"{n} buys {b} boxes with {a} {t} in each box. How many {t} is that in all?",
                $"{n} has {b} bags and each bag holds {a} {t}. How many {t} in total?"],
        };
        return Pick(rng, forms);
    }

    private static readonly string[] VariedOpenings = ["", "", "Hi! ", "Hello. ", "Please help: ", "Question: ", "ok so ", "I wonder, ", "Help me out. ", "Math time! "];
    private static readonly string[] VariedForms = ["what is {0}", "What's {0}", "Evaluate {0}", "Find the value of {0}", "Work this out: {0}",
        "Do {0}", "Give me {0}", "Figure out {0}", "Mind doing {0}", "{0} equals what", "What do you get for {0}", "Answer {0}"];
    private static readonly string[] VariedEndings = ["?", ".", "!", "", " please.", " thanks!"];
    private static readonly string[] VariedNames = ["Dan", "Sue", "Ali", "Jo", "Meg", "Ray", "Nia", "Ted"];
    private static readonly string[] VariedThings = ["pens", "eggs", "toys", "rocks", "beads", "cups", "hats", "nuts"];

    /// <summary>Training questions in many wordings (GRPO's): an opening, a question form, an ending, sometimes all in
    /// lower case; word problems with other names, things and verbs. Disjoint from <see cref="AskUnseen"/>'s.</summary>
    private static string AskVaried(Rng rng, Operation op, long a, long b, bool word)
    {
        if (word)
        {
            string n = Pick(rng, VariedNames), t = Pick(rng, VariedThings);
            string[] forms = op switch
            {
                Operation.Add => [$"{n} had {a} {t} and found {b} more. How many {t} now?", $"A box has {a} {t}. We add {b} {t}. How many {t} are in the box?"],
                Operation.Subtract => [$"{n} had {a} {t} and lost {b}. How many {t} remain?", $"A jar held {a} {t}. {n} ate {b}. How many are still in the jar?"],
                _ => [$"{n} has {b} rows of {a} {t}. How many {t}?", $"Each of {b} kids brings {a} {t}. How many {t} altogether?"],
            };
            return Pick(rng, forms);
        }
        string q = Pick(rng, VariedOpenings) + string.Format(CultureInfo.InvariantCulture, Pick(rng, VariedForms), Expression(rng, op, a, b)) + Pick(rng, VariedEndings);
        return rng.NextUInt64() % 4 == 0 ? q.ToLowerInvariant() : q;
    }

    private static string AskUnseen(Rng rng, Operation op, long a, long b, bool word)
    {
        if (!word) return string.Format(CultureInfo.InvariantCulture, Pick(rng, UnseenForms), Expression(rng, op, a, b));
        string n = Pick(rng, UnseenNames), t = Pick(rng, UnseenThings);
        return op switch
        {
            Operation.Add => $"A shelf holds {a} {t}. {n} puts {b} more on it. How many {t} are on the shelf?",
            Operation.Subtract => $"{n} baked {a} {t} and sold {b}. How many {t} are left?",
            _ => $"{n} packs {b} crates with {a} {t} in each. How many {t} did {n} pack?",
        };
    }

    /// <summary>The worked solution R1's cold start trains on, inside <c>&lt;think&gt;…&lt;/think&gt;</c>, then one answer
    /// line. The working goes column by column from the ones; before each column it rewrites what is left of the
    /// operands (and the carry or borrow), so the digits a column needs are always the last ones just written, and it
    /// keeps the result so far, so the final line copies rather than reassembles.</summary>
    public static string Solution(Problem p)
    {
        var sb = new StringBuilder("<think>\n");
        string sym = Symbol(p.Op);
        sb.Append(CultureInfo.InvariantCulture, $"We need {p.A} {sym} {p.B}.\n");
        switch (p.Op)
        {
            case Operation.Add: AddColumns(sb, p.A, p.B); break;
            case Operation.Subtract: SubtractColumns(sb, p.A, p.B); break;
            default: MultiplyColumns(sb, p.A, p.B); break;
        }
        sb.Append(CultureInfo.InvariantCulture, $"So {p.A} {sym} {p.B} = {p.Answer}.\n</think>\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"The answer is {p.Answer}.");
        return sb.ToString();
    }

    private static readonly string[] Places = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"];

    private static string Place(int col) => Places[Math.Min(col, Places.Length - 1)];

    private static void AddColumns(StringBuilder sb, long a, long b)
    {
        int carry = 0, col = 0;
        string sofar = "";
        while (a > 0 || b > 0 || carry > 0 || col == 0)
        {
            if (col > 0) sb.Append(CultureInfo.InvariantCulture, $"Next {a} + {b}{(carry > 0 ? ", carry 1" : "")}.\n");
            int x = (int)(a % 10), y = (int)(b % 10), s = x + y + carry;
            sofar = (s % 10).ToString(CultureInfo.InvariantCulture) + sofar;
            sb.Append(CultureInfo.InvariantCulture, $"{Place(col)}: {x} + {y}{(carry > 0 ? " + 1" : "")} = {s}, write {s % 10}{(s >= 10 ? ", carry 1" : "")}. So far {sofar}.\n");
            carry = s / 10; a /= 10; b /= 10; col++;
        }
    }

    private static void SubtractColumns(StringBuilder sb, long a, long b)
    {
        int borrow = 0, col = 0;
        string sofar = "";
        while (a > 0 || col == 0)
        {
            if (col > 0) sb.Append(CultureInfo.InvariantCulture, $"Next {a} - {b}{(borrow > 0 ? ", borrowed 1" : "")}.\n");
            int x = (int)(a % 10), y = (int)(b % 10);
            sb.Append(CultureInfo.InvariantCulture, $"{Place(col)}: ");
            if (borrow > 0) { sb.Append(CultureInfo.InvariantCulture, $"{x} - 1 = {x - 1}, "); x -= 1; }
            bool need = x < y;
            int d = (need ? x + 10 : x) - y;
            sofar = d.ToString(CultureInfo.InvariantCulture) + sofar;
            sb.Append(need ? $"{x} - {y}, borrow 10: {x + 10} - {y} = {d}" : $"{x} - {y} = {d}");
            sb.Append(CultureInfo.InvariantCulture, $", write {d}. So far {sofar}.\n");
            borrow = need ? 1 : 0; a /= 10; b /= 10; col++;
        }
    }

    private static void MultiplyColumns(StringBuilder sb, long a, long b)
    {
        int carry = 0, col = 0, y = (int)b;
        string sofar = "";
        do
        {
            if (col > 0) sb.Append(CultureInfo.InvariantCulture, $"Next {a} * {y}{(carry > 0 ? $", carry {carry}" : "")}.\n");
            int x = (int)(a % 10), prod = x * y, s = prod + carry;
            bool last = a < 10;
            sb.Append(CultureInfo.InvariantCulture, $"{Place(col)}: {x} * {y} = {prod}");
            if (carry > 0) sb.Append(CultureInfo.InvariantCulture, $", {prod} + {carry} = {s}");
            string written = last ? s.ToString(CultureInfo.InvariantCulture) : (s % 10).ToString(CultureInfo.InvariantCulture);
            sofar = written + sofar;
            sb.Append(CultureInfo.InvariantCulture, $", write {written}{(!last && s >= 10 ? $", carry {s / 10}" : "")}. So far {sofar}.\n");
            carry = s / 10; a /= 10; col++;
        } while (a > 0);
    }

    private static readonly Regex Integer = new(@"-?\d[\d,]*", RegexOptions.Compiled);

    /// <summary>Checks a completion that follows R1's generation prompt (which ends in <c>&lt;think&gt;\n</c>, so the
    /// completion may or may not repeat the opening tag): well-formed when it holds exactly one <c>&lt;/think&gt;</c>
    /// with reasoning before it and a number after it; correct when the last integer after <c>&lt;/think&gt;</c> is the
    /// answer (a reply without the closing tag is neither).</summary>
    public static (bool WellFormed, bool Correct) Verify(string completion, long answer)
    {
        int close = completion.IndexOf("</think>", StringComparison.Ordinal);
        int opens = Count(completion, "<think>");
        bool tags = Count(completion, "</think>") == 1 && (opens == 0 || opens == 1 && completion.TrimStart().StartsWith("<think>", StringComparison.Ordinal));
        if (!tags) return (false, false);
        string reasoning = completion[..close].Replace("<think>", "", StringComparison.Ordinal), after = completion[(close + 8)..];
        MatchCollection numbers = Integer.Matches(after);
        if (numbers.Count == 0) return (false, false);
        bool correct = long.TryParse(numbers[^1].Value.Replace(",", "", StringComparison.Ordinal), NumberStyles.AllowLeadingSign,
            CultureInfo.InvariantCulture, out long got) && got == answer;
        return (reasoning.Trim().Length > 0, correct);
    }

    private static int Count(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>TinyZero's rule-based reward: 1 when correct, a small bonus for the format alone, else 0.</summary>
    public static double Reward(string completion, long answer, double formatReward = 0.1)
    {
        var (wellFormed, correct) = Verify(completion, answer);
        return correct ? 1.0 : wellFormed ? formatReward : 0.0;
    }
}
