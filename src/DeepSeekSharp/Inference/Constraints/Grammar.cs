namespace DeepSeekSharp.Inference.Constraints;

/// <summary>A context-free grammar over bytes, flattened the way llama.cpp's GBNF engine stores one: every rule is a
/// list of alternatives, every alternative a run of elements ending in <see cref="Kind.End"/>; an element matches one
/// byte from a set, one special token (tool-call markers and the like, which have no bytes a text grammar could
/// match), or expands another rule. Built by <see cref="GrammarBuilder"/>; read by <see cref="GrammarMatcher"/>.
/// No rule may be left-recursive or repeat something that matches nothing (the builder's helpers never do).</summary>
public sealed class Grammar
{
    internal enum Kind : byte { Bytes, Rule, End, Token }

    internal readonly Kind[] Kinds;        // [positions]
    internal readonly int[] Args;          // [positions] byte-set index (Bytes), rule index (Rule) or token id (Token)
    internal readonly ulong[] Sets;        // [sets × 4] 256-bit masks of the bytes each set matches
    internal readonly int[][] Alternatives; // [rules][alternatives] the position each alternative starts at
    internal readonly int[] MinBytes;      // [positions] fewest bytes from this position to the end of its alternative
    internal readonly string[] RuleNames;

    internal Grammar(Kind[] kinds, int[] args, ulong[] sets, int[][] alternatives, string[] ruleNames, int root)
    {
        Kinds = kinds;
        Args = args;
        Sets = sets;
        Alternatives = alternatives;
        RuleNames = ruleNames;
        Root = root;
        MinBytes = ComputeMinBytes();
    }

    /// <summary>The rule a whole output must match.</summary>
    public int Root { get; }

    /// <summary>The fewest bytes of any string the whole grammar matches.</summary>
    public int MinLength => RuleMin(Root);

    internal bool Matches(int set, byte b) => (Sets[set * 4 + (b >> 6)] >> (b & 63) & 1) != 0;

    internal int RuleMin(int rule)
    {
        int best = int.MaxValue;
        foreach (int start in Alternatives[rule]) best = Math.Min(best, MinBytes[start]);
        return best;
    }

    /// <summary>Shortest completions by fixed-point iteration: a rule's length is its shortest alternative's, an
    /// alternative's the sum of its elements'. Rules that can never finish keep int.MaxValue.</summary>
    private int[] ComputeMinBytes()
    {
        var min = new int[Kinds.Length];
        Array.Fill(min, int.MaxValue);
        var rule = new int[Alternatives.Length];
        Array.Fill(rule, int.MaxValue);
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int r = 0; r < Alternatives.Length; r++)
                foreach (int start in Alternatives[r])
                {
                    int end = start;
                    while (Kinds[end] != Kind.End) end++;
                    long sum = 0;
                    for (int p = end; p >= start; p--)
                    {
                        sum += Kinds[p] switch { Kind.Bytes or Kind.Token => 1, Kind.Rule => rule[Args[p]], _ => 0 };
                        int v = sum >= int.MaxValue ? int.MaxValue : (int)sum;
                        if (v < min[p]) { min[p] = v; changed = true; }
                    }
                    if (min[start] < rule[r]) { rule[r] = min[start]; changed = true; }
                }
        }
        return min;
    }
}

/// <summary>A piece of a grammar under construction: one byte from a set, another rule, or a sequence.</summary>
public abstract record Symbol
{
    public static Symbol operator +(Symbol a, Symbol b) => new SequenceSymbol([a, b]);

    /// <summary>The union of two byte sets.</summary>
    public static Symbol operator |(Symbol a, Symbol b) => (a, b) is (ByteSetSymbol x, ByteSetSymbol y)
        ? new ByteSetSymbol(x.B0 | y.B0, x.B1 | y.B1, x.B2 | y.B2, x.B3 | y.B3)
        : throw new ArgumentException("'|' joins byte sets; use GrammarBuilder.Choice for alternatives");
}

internal sealed record ByteSetSymbol(ulong B0, ulong B1, ulong B2, ulong B3) : Symbol;
internal sealed record RuleSymbol(int Rule) : Symbol;
internal sealed record TokenSymbol(int Id) : Symbol;
internal sealed record SequenceSymbol(Symbol[] Items) : Symbol;

/// <summary>Builds a <see cref="Grammar"/>: reserve rules, add alternatives made of literals, byte sets and other
/// rules, then <see cref="Build"/>. Repetition helpers create their own right-recursive rules.</summary>
public sealed class GrammarBuilder
{
    private readonly List<string> _names = [];
    private readonly List<List<Symbol>> _alternatives = [];
    private readonly Dictionary<string, int> _byName = [];

    /// <summary>Reserves a rule (alternatives are added later, so rules may refer to each other).</summary>
    public int Rule(string name)
    {
        string unique = name;
        for (int i = 2; _byName.ContainsKey(unique); i++) unique = $"{name}-{i}";
        _byName[unique] = _names.Count;
        _names.Add(unique);
        _alternatives.Add([]);
        return _names.Count - 1;
    }

    public int RuleCount => _names.Count;

    /// <summary>Adds an alternative to <paramref name="rule"/>: the symbols in order (none = the empty string).</summary>
    public void Add(int rule, params Symbol[] sequence) => _alternatives[rule].Add(new SequenceSymbol(sequence));

    /// <summary>A new rule with the given alternatives.</summary>
    public Symbol Choice(string name, params Symbol[] alternatives)
    {
        int r = Rule(name);
        foreach (Symbol a in alternatives) Add(r, a);
        return Ref(r);
    }

    public static Symbol Ref(int rule) => new RuleSymbol(rule);

    /// <summary>One special token (counted as one byte of length).</summary>
    public static Symbol Token(int id) => new TokenSymbol(id);

    public static Symbol Empty { get; } = new SequenceSymbol([]);

    /// <summary>The UTF-8 bytes of <paramref name="text"/>, in order.</summary>
    public static Symbol Literal(string text) =>
        new SequenceSymbol(System.Text.Encoding.UTF8.GetBytes(text).Select(b => (Symbol)Bytes(b, b)).ToArray());

    /// <summary>One byte in [<paramref name="lo"/>, <paramref name="hi"/>].</summary>
    public static Symbol Bytes(byte lo, byte hi) => Set(Enumerable.Range(lo, hi - lo + 1).Select(i => (byte)i));

    /// <summary>One byte out of the characters of <paramref name="chars"/> (ASCII only).</summary>
    public static Symbol AnyOf(string chars) => Set(chars.Select(c => c < 128 ? (byte)c : throw new ArgumentException("ASCII only", nameof(chars))));

    public static Symbol Set(IEnumerable<byte> bytes)
    {
        Span<ulong> m = stackalloc ulong[4];
        foreach (byte b in bytes) m[b >> 6] |= 1UL << (b & 63);
        return new ByteSetSymbol(m[0], m[1], m[2], m[3]);
    }

    /// <summary>One ASCII byte that is not in <paramref name="chars"/> and not a control character.</summary>
    public static Symbol PrintableExcept(string chars) =>
        Set(Enumerable.Range(0x20, 0x5F).Select(i => (byte)i).Where(b => chars.IndexOf((char)b) < 0));

    /// <summary>Zero or more <paramref name="item"/>s (it must not match the empty string).</summary>
    public Symbol Star(Symbol item, string name = "star")
    {
        int r = Rule(name);
        Add(r, item, Ref(r));
        Add(r);
        return Ref(r);
    }

    /// <summary><paramref name="item"/> or nothing.</summary>
    public Symbol Optional(Symbol item, string name = "opt") => Choice(name, item, Empty);

    /// <summary>Between <paramref name="min"/> and <paramref name="max"/> (null = unbounded) <paramref name="item"/>s.</summary>
    public Symbol Repeat(Symbol item, int min, int? max, string name = "rep")
    {
        if (min < 0 || max < min) throw new ArgumentOutOfRangeException(nameof(max), $"cannot repeat between {min} and {max} times");
        var parts = new List<Symbol>();
        for (int i = 0; i < min; i++) parts.Add(item);
        if (max is null) parts.Add(Star(item, name));
        else
        {
            // x{0,k} as nested options, x (x (x)?)? )?, so each step is one decision and the rule count is k.
            Symbol tail = Empty;
            for (int i = 0; i < max - min; i++) tail = Optional(i == 0 ? item : new SequenceSymbol([item, tail]), name);
            parts.Add(tail);
        }
        return new SequenceSymbol([.. parts]);
    }

    public Grammar Build(int root)
    {
        var kinds = new List<Grammar.Kind>();
        var args = new List<int>();
        var sets = new List<ulong>();
        var setIndex = new Dictionary<ByteSetSymbol, int>();
        var starts = new int[_names.Count][];
        for (int r = 0; r < _names.Count; r++)
        {
            var alt = new List<int>();
            foreach (Symbol a in _alternatives[r])
            {
                alt.Add(kinds.Count);
                Emit(a);
                kinds.Add(Grammar.Kind.End);
                args.Add(0);
            }
            if (alt.Count == 0) throw new InvalidOperationException($"grammar rule '{_names[r]}' has no alternatives");
            starts[r] = [.. alt];
        }
        return new Grammar([.. kinds], [.. args], [.. sets], starts, [.. _names], root);

        void Emit(Symbol s)
        {
            switch (s)
            {
                case SequenceSymbol q:
                    foreach (Symbol item in q.Items) Emit(item);
                    break;
                case RuleSymbol rs:
                    kinds.Add(Grammar.Kind.Rule);
                    args.Add(rs.Rule);
                    break;
                case TokenSymbol t:
                    kinds.Add(Grammar.Kind.Token);
                    args.Add(t.Id);
                    break;
                case ByteSetSymbol b:
                    if (!setIndex.TryGetValue(b, out int i))
                    {
                        i = setIndex[b] = setIndex.Count;
                        sets.AddRange([b.B0, b.B1, b.B2, b.B3]);
                    }
                    kinds.Add(Grammar.Kind.Bytes);
                    args.Add(i);
                    break;
            }
        }
    }
}
