using System.Runtime.CompilerServices;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Inference.Constraints;

/// <summary>A <see cref="Grammar"/> bound to a tokenizer's vocabulary: which tokens may come next in any state of
/// the grammar. Parsing state is a set of stacks, as in llama.cpp's grammar engine (a stack is the path of rule
/// positions still to finish; several stacks while alternatives are undecided). Stacks are interned as shared
/// linked nodes and stack sets as numbered states, so a state's move on a byte is computed once and then looked up,
/// and the set of tokens allowed in a state (a walk of the vocabulary's byte trie) is computed once per state and
/// cached. Thread-safe: the tables grow under a lock; <see cref="GrammarMatcher"/> holds one reply's state.</summary>
public sealed class TokenGrammar
{
    private const int Dead = -1, Unknown = -2;
    private const int AcceptNode = 0;             // the empty stack: the grammar is complete
    private const int MaxCachedMasks = 512;       // × vocab/8 bytes (16 KB for DeepSeek-V3): 8 MB

    private readonly Grammar _g;
    private readonly VocabularyTrie _trie;
    private readonly int _vocab;                  // the model's: masks cover every logit
    private readonly int[] _eos;
    private readonly object _lock = new();

    // Stack nodes: (position, parent node or -1 at the bottom), interned so equal stacks share one id.
    private readonly List<(int Pos, int Parent)> _nodes = [(-1, -1)];
    private readonly Dictionary<(int, int), int> _nodeIds = [];
    private readonly List<int> _nodeMin = [0];    // fewest bytes to empty the stack

    // States: sorted distinct node ids; their byte moves and, once computed, their allowed-token masks.
    private readonly List<State> _states = [];
    private readonly Dictionary<NodeSet, int> _stateIds = [];
    private readonly Dictionary<(int State, int Token), int> _tokenMoves = [];
    private int _cachedMasks;

    private sealed class State(int[] nodes, int minBytes)
    {
        public readonly int[] Nodes = nodes;
        public readonly int MinBytes = minBytes;  // 0 = the grammar may end here
        public readonly int[] Next = NewMoves();
        public ulong[]? Mask;                     // tokens allowed with unlimited room left
        public int MaxMinAfter;                   // the most bytes any allowed token leaves to finish

        private static int[] NewMoves()
        {
            var m = new int[256];
            Array.Fill(m, Unknown);
            return m;
        }
    }

    private readonly record struct NodeSet(int[] Ids)
    {
        public bool Equals(NodeSet other) => Ids.AsSpan().SequenceEqual(other.Ids);
        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (int i in Ids) h.Add(i);
            return h.ToHashCode();
        }
    }

    /// <param name="eosTokenIds">tokens that end the reply: allowed exactly when the grammar is complete</param>
    public TokenGrammar(Grammar grammar, Tokenizer tokenizer, int modelVocab, IEnumerable<int> eosTokenIds)
    {
        _g = grammar;
        _trie = VocabularyTrie.For(tokenizer);
        _vocab = Math.Max(modelVocab, tokenizer.VocabSize);
        _eos = eosTokenIds.Distinct().ToArray();
        if (grammar.MinLength == int.MaxValue) throw new ArgumentException("the grammar matches no finite string", nameof(grammar));
        var start = new List<int>();
        foreach (int alt in grammar.Alternatives[grammar.Root]) Expand(alt, -1, start, 0);
        Start = Intern(start);
    }

    public Grammar Grammar => _g;
    internal int Start { get; }
    public int VocabSize => _vocab;

    /// <summary>States reached so far and masks cached (for tests and diagnostics).</summary>
    public (int States, int CachedMasks) Size { get { lock (_lock) return (_states.Count, _cachedMasks); } }

    internal int MinBytes(int state) { lock (_lock) return _states[state].MinBytes; }

    internal bool IsEos(int token) => Array.IndexOf(_eos, token) >= 0;

    /// <summary>The state after <paramref name="token"/>, or -1 when the grammar refuses it. EOS: the same state
    /// when the grammar may end here.</summary>
    internal int Advance(int state, int token)
    {
        lock (_lock)
        {
            if (IsEos(token)) return _states[state].MinBytes == 0 ? state : Dead;
            ReadOnlySpan<byte> bytes = _trie.Bytes(token);
            if (bytes.IsEmpty) return StepToken(state, token); // special tokens (and ids past the tokenizer's: dead)
            foreach (byte b in bytes)
                if ((state = Step(state, b)) == Dead) return Dead;
            return state;
        }
    }

    /// <summary>Whether <paramref name="token"/> may come next with <paramref name="room"/> tokens left after it:
    /// the grammar accepts it and can still be finished in that many tokens (one byte per token at worst; a
    /// vocabulary that has every byte as a token, as byte-level BPE does, can always do that).</summary>
    internal bool Allows(int state, int token, int room)
    {
        int next = Advance(state, token);
        return next != Dead && (IsEos(token) || MinBytes(next) <= Limit(state, room));
    }

    /// <summary>The most bytes a token may leave to finish: the room, or — when the room is already too small for the
    /// shortest completion (a token limit below it) — one byte less than now, so every token makes progress.</summary>
    private int Limit(int state, int room) => Math.Max(room, MinBytes(state) - 1);

    internal bool TryAcceptBytes(ref int state, ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            int s = state;
            foreach (byte b in bytes)
                if ((s = Step(s, b)) == Dead) return false;
            state = s;
            return true;
        }
    }

    /// <summary>Sets in <paramref name="mask"/> (one bit per token id, <see cref="VocabSize"/> bits) the tokens allowed
    /// next with <paramref name="room"/> tokens left after the one chosen.</summary>
    internal void FillMask(int state, int room, Span<ulong> mask)
    {
        lock (_lock)
        {
            State s = _states[state];
            if (s.Mask is null)
            {
                s.Mask = new ulong[(_vocab + 63) / 64];
                s.MaxMinAfter = Walk(state, int.MaxValue, s.Mask);
                if (++_cachedMasks > MaxCachedMasks) DropMasks(except: s);
            }
            room = Limit(state, room);
            if (room >= s.MaxMinAfter) s.Mask.CopyTo(mask);
            else
            {
                mask.Clear();
                Walk(state, room, mask);
            }
            if (s.MinBytes == 0)
                foreach (int e in _eos)
                    if ((uint)e < (uint)_vocab) mask[e >> 6] |= 1UL << (e & 63);
        }
    }

    private void DropMasks(State except)
    {
        foreach (State s in _states)
            if (s != except) s.Mask = null;
        _cachedMasks = 1;
    }

    /// <summary>Walks the vocabulary trie depth first from <paramref name="state"/>, skipping every subtree whose
    /// prefix the grammar refuses; sets the tokens that fit <paramref name="room"/>. Returns the largest number of
    /// bytes an allowed token leaves to finish.</summary>
    private int Walk(int state, int room, Span<ulong> mask)
    {
        VocabularyTrie t = _trie;
        Span<int> stateAt = stackalloc int[t.MaxDepth + 1];
        stateAt[0] = state;
        int maxMinAfter = 0;
        for (int i = 0; i < t.NodeCount;)
        {
            int depth = t.Depth[i];
            int next = Step(stateAt[depth - 1], t.Byte[i]);
            if (next == Dead) { i = t.SubtreeEnd[i]; continue; }
            stateAt[depth] = next;
            int min = _states[next].MinBytes;
            if (min <= room)
            {
                for (int k = t.TokenStart[i]; k < t.TokenStart[i + 1]; k++)
                {
                    int id = t.Tokens[k];
                    mask[id >> 6] |= 1UL << (id & 63);
                }
                if (t.TokenStart[i + 1] > t.TokenStart[i]) maxMinAfter = Math.Max(maxMinAfter, min);
            }
            i++;
        }
        foreach (int node in _states[state].Nodes)
        {
            if (node == AcceptNode || _g.Kinds[_nodes[node].Pos] != Grammar.Kind.Token) continue;
            int id = _g.Args[_nodes[node].Pos];
            int min = _states[StepToken(state, id)].MinBytes;
            if (min > room || (uint)id >= (uint)_vocab) continue;
            mask[id >> 6] |= 1UL << (id & 63);
            maxMinAfter = Math.Max(maxMinAfter, min);
        }
        return maxMinAfter;
    }

    /// <summary>The state after one byte (memoised).</summary>
    private int Step(int state, byte b)
    {
        State s = _states[state];
        int next = s.Next[b];
        if (next != Unknown) return next;
        var stacks = new List<int>();
        foreach (int node in s.Nodes)
        {
            if (node == AcceptNode) continue;
            var (pos, parent) = _nodes[node];
            if (_g.Kinds[pos] == Grammar.Kind.Bytes && _g.Matches(_g.Args[pos], b)) Expand(pos + 1, parent, stacks, 0);
        }
        return s.Next[b] = stacks.Count == 0 ? Dead : Intern(stacks);
    }

    /// <summary>The state after a special token the grammar names (memoised).</summary>
    private int StepToken(int state, int token)
    {
        if (_tokenMoves.TryGetValue((state, token), out int next)) return next;
        var stacks = new List<int>();
        foreach (int node in _states[state].Nodes)
        {
            if (node == AcceptNode) continue;
            var (pos, parent) = _nodes[node];
            if (_g.Kinds[pos] == Grammar.Kind.Token && _g.Args[pos] == token) Expand(pos + 1, parent, stacks, 0);
        }
        return _tokenMoves[(state, token)] = stacks.Count == 0 ? Dead : Intern(stacks);
    }

    /// <summary>Adds the stacks that continue from <paramref name="pos"/> above <paramref name="parent"/>, each with a
    /// byte set on top (or the empty stack): rules are entered, finished alternatives return to their parent. A rule
    /// called last in an alternative leaves no return position (tail call), so repetition keeps the stack flat.</summary>
    private void Expand(int pos, int parent, List<int> output, int depth)
    {
        if (depth > 4096) throw new InvalidOperationException("the grammar recurses without consuming input (a left-recursive rule or a repeated empty match)");
        switch (_g.Kinds[pos])
        {
            case Grammar.Kind.Bytes or Grammar.Kind.Token:
                output.Add(Node(pos, parent));
                break;
            case Grammar.Kind.Rule:
                int above = _g.Kinds[pos + 1] == Grammar.Kind.End ? parent : Node(pos + 1, parent);
                foreach (int alt in _g.Alternatives[_g.Args[pos]]) Expand(alt, above, output, depth + 1);
                break;
            default:
                if (parent < 0) output.Add(AcceptNode);
                else Expand(_nodes[parent].Pos, _nodes[parent].Parent, output, depth + 1);
                break;
        }
    }

    private int Node(int pos, int parent)
    {
        if (_nodeIds.TryGetValue((pos, parent), out int id)) return id;
        id = _nodes.Count;
        _nodes.Add((pos, parent));
        _nodeIds[(pos, parent)] = id;
        long min = (long)_g.MinBytes[pos] + (parent < 0 ? 0 : _nodeMin[parent]);
        _nodeMin.Add((int)Math.Min(min, int.MaxValue));
        return id;
    }

    private int Intern(List<int> nodes)
    {
        nodes.Sort();
        int n = 0;
        for (int i = 0; i < nodes.Count; i++)
            if (i == 0 || nodes[i] != nodes[n - 1]) nodes[n++] = nodes[i];
        var key = new NodeSet(nodes.GetRange(0, n).ToArray());
        if (_stateIds.TryGetValue(key, out int id)) return id;
        int min = int.MaxValue;
        foreach (int node in key.Ids) min = Math.Min(min, _nodeMin[node]);
        _states.Add(new State(key.Ids, min));
        return _stateIds[key] = _states.Count - 1;
    }

    /// <summary>A matcher for one reply, at the grammar's start.</summary>
    public GrammarMatcher NewMatcher() => new(this);
}

/// <summary>One reply's place in a <see cref="TokenGrammar"/>.</summary>
public sealed class GrammarMatcher
{
    private readonly TokenGrammar _grammar;
    private int _state;

    internal GrammarMatcher(TokenGrammar grammar)
    {
        _grammar = grammar;
        _state = grammar.Start;
    }

    public TokenGrammar Grammar => _grammar;

    /// <summary>The output so far is a complete match (the reply may end here).</summary>
    public bool IsComplete => _grammar.MinBytes(_state) == 0;

    /// <summary>The fewest bytes still needed to complete a match.</summary>
    public int MinBytesLeft => _grammar.MinBytes(_state);

    /// <summary>Whether <paramref name="token"/> may come next with <paramref name="room"/> more tokens after it.</summary>
    public bool Allows(int token, int room = int.MaxValue) => _grammar.Allows(_state, token, room);

    /// <summary>Sets the bit of every token that may come next (see <see cref="Allows"/>).</summary>
    public void FillMask(Span<ulong> mask, int room = int.MaxValue) => _grammar.FillMask(_state, room, mask);

    /// <summary>Moves past <paramref name="token"/>; throws when the grammar refuses it.</summary>
    public void Accept(int token)
    {
        int next = _grammar.Advance(_state, token);
        if (next < 0) throw new InvalidOperationException($"token {token} does not fit the grammar here");
        _state = next;
    }

    /// <summary>Moves past <paramref name="token"/> when the grammar allows it; false, and no move, otherwise.</summary>
    public bool TryAccept(int token)
    {
        int next = _grammar.Advance(_state, token);
        if (next < 0) return false;
        _state = next;
        return true;
    }

    /// <summary>Moves past raw bytes (text that arrived inside a token chosen before the grammar applied).
    /// False, and no move, when the grammar refuses them.</summary>
    public bool TryAcceptBytes(ReadOnlySpan<byte> bytes) => _grammar.TryAcceptBytes(ref _state, bytes);
}

/// <summary>Every token's bytes in one trie, laid out in depth-first order so a walk is a loop over arrays
/// (node i's subtree is i+1 … SubtreeEnd[i]-1). Special and added tokens are left out: a grammar never allows them.
/// One per tokenizer.</summary>
internal sealed class VocabularyTrie
{
    private static readonly ConditionalWeakTable<Tokenizer, VocabularyTrie> ByTokenizer = new();

    private readonly byte[][] _bytes;
    public readonly byte[] Byte;
    public readonly int[] Depth, SubtreeEnd, TokenStart, Tokens;
    public readonly int NodeCount, MaxDepth;

    public static VocabularyTrie For(Tokenizer tokenizer) => ByTokenizer.GetValue(tokenizer, t => new VocabularyTrie(t));

    private VocabularyTrie(Tokenizer tokenizer)
    {
        _bytes = new byte[tokenizer.VocabSize][];
        var ids = new List<int>();
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            _bytes[id] = tokenizer.IsSpecial(id) || tokenizer.IsAddedToken(id) ? [] : tokenizer.TokenBytes(id).ToArray();
            if (_bytes[id].Length > 0) ids.Add(id);
        }
        ids.Sort((a, b) => _bytes[a].AsSpan().SequenceCompareTo(_bytes[b]) is var c && c != 0 ? c : a.CompareTo(b));
        var bytes = new List<byte>();
        var depth = new List<int>();
        var tokenStart = new List<int>();
        var tokens = new List<int>();
        var path = new List<int>();      // node index at each depth of the current path
        foreach (int id in ids)
        {
            byte[] t = _bytes[id];
            int common = 0;
            while (common < path.Count && common < t.Length && bytes[path[common]] == t[common]) common++;
            path.RemoveRange(common, path.Count - common);
            for (int d = common; d < t.Length; d++)
            {
                path.Add(bytes.Count);
                bytes.Add(t[d]);
                depth.Add(d + 1);
                tokenStart.Add(tokens.Count);
            }
            // Tokens sorted by bytes end at the current last node; nodes appended later start after them.
            tokens.Add(id);
            MaxDepth = Math.Max(MaxDepth, t.Length);
        }
        NodeCount = bytes.Count;
        Byte = [.. bytes];
        Depth = [.. depth];
        // A node's tokens run from its TokenStart to the next node's (tokens are appended in node order).
        TokenStart = [.. tokenStart, tokens.Count];
        Tokens = [.. tokens];
        SubtreeEnd = new int[NodeCount];
        var open = new Stack<int>();
        for (int i = 0; i < NodeCount; i++)
        {
            while (open.Count > 0 && Depth[open.Peek()] >= Depth[i]) SubtreeEnd[open.Pop()] = i;
            open.Push(i);
        }
        while (open.Count > 0) SubtreeEnd[open.Pop()] = NodeCount;
    }

    public ReadOnlySpan<byte> Bytes(int id) => (uint)id < (uint)_bytes.Length ? _bytes[id] : [];
}
