using System.Text;
using System.Text.Json;
using DeepSeekSharp.Inference.Constraints;
using DeepSeekSharp.Text;
using static DeepSeekSharp.Inference.Constraints.GrammarBuilder;

namespace DeepSeekSharp.Inference.Tools;

/// <summary>A function the model may call: its name, what it does, and a JSON schema of its arguments.</summary>
public sealed record ToolDefinition(string Name, string? Description = null, JsonElement? Parameters = null)
{
    /// <summary>OpenAI's <c>{"type": "function", "function": {...}}</c>, as chat templates take tools.</summary>
    public object ToOpenAi() => new Dictionary<string, object?>
    {
        ["type"] = "function",
        ["function"] = new Dictionary<string, object?>
        {
            ["name"] = Name,
            ["description"] = Description,
            ["parameters"] = Parameters,
        },
    };
}

/// <summary>Whether and which tool the model must call (OpenAI's <c>tool_choice</c>).</summary>
public sealed record ToolChoice
{
    private ToolChoice(string mode, string? name) { Mode = mode; FunctionName = name; }

    public string Mode { get; }
    public string? FunctionName { get; }

    /// <summary>The model decides.</summary>
    public static ToolChoice Auto { get; } = new("auto", null);
    /// <summary>No calls: tools are not offered.</summary>
    public static ToolChoice None { get; } = new("none", null);
    /// <summary>At least one call, enforced by constrained decoding.</summary>
    public static ToolChoice Required { get; } = new("required", null);
    /// <summary>One call of this function, enforced by constrained decoding.</summary>
    public static ToolChoice Function(string name) => new("function", name);

    public bool ForcesCall => Mode is "required" or "function";
}

/// <summary>One streamed piece of a tool call: the first piece of a call carries its id and name, later ones the
/// next fragment of its JSON arguments (as OpenAI streams <c>tool_calls</c> deltas).</summary>
public sealed record ToolCallDelta(int Index, string? Id, string? Name, string Arguments);

/// <summary>Whole tool calls put together from their streamed <see cref="ToolCallDelta"/>s, in call order.</summary>
public sealed class ToolCallCollector
{
    private readonly List<(string Id, string Name, StringBuilder Arguments)> _calls = [];

    public int Count => _calls.Count;

    public void Add(ToolCallDelta d)
    {
        if (d.Name is not null) _calls.Add((d.Id!, d.Name, new StringBuilder()));
        if (d.Index < _calls.Count) _calls[d.Index].Arguments.Append(d.Arguments);
    }

    /// <summary>Each call's id, name and JSON arguments as written.</summary>
    public IEnumerable<(string Id, string Name, string Arguments)> Calls => _calls.Select(c => (c.Id, c.Name, c.Arguments.ToString()));
}

/// <summary>How a model writes tool calls, read from its chat template. Both wrap calls in
/// <c>&lt;｜tool▁calls▁begin｜&gt; … &lt;｜tool▁calls▁end｜&gt;</c>, each call in
/// <c>&lt;｜tool▁call▁begin｜&gt; … &lt;｜tool▁call▁end｜&gt;</c>:
/// DeepSeek-V3/R1: <c>function&lt;｜tool▁sep｜&gt;NAME\n```json\nARGS\n```</c>, calls separated by a newline;
/// DeepSeek-V3.1: <c>NAME&lt;｜tool▁sep｜&gt;ARGS</c>, calls back to back.</summary>
public enum ToolCallFormat { V3, V31 }

/// <summary>The special tokens of DeepSeek's tool-call format.</summary>
public sealed record ToolTokens(int CallsBegin, int CallsEnd, int CallBegin, int CallEnd, int Sep)
{
    public const string CallsBeginText = "<｜tool▁calls▁begin｜>", CallsEndText = "<｜tool▁calls▁end｜>",
        CallBeginText = "<｜tool▁call▁begin｜>", CallEndText = "<｜tool▁call▁end｜>", SepText = "<｜tool▁sep｜>";

    /// <summary>The tokens, or null when the tokenizer lacks any of them.</summary>
    public static ToolTokens? For(Tokenizer t) =>
        t.TryTokenToId(CallsBeginText) is { } a && t.TryTokenToId(CallsEndText) is { } b && t.TryTokenToId(CallBeginText) is { } c
        && t.TryTokenToId(CallEndText) is { } d && t.TryTokenToId(SepText) is { } e
            ? new ToolTokens(a, b, c, d, e) : null;
}

public static class ToolCalling
{
    /// <summary>V3.1 templates write <c>NAME&lt;｜tool▁sep｜&gt;ARGUMENTS</c>; everything else is read as V3/R1's.</summary>
    public static ToolCallFormat FormatOf(string? chatTemplate) =>
        chatTemplate is not null && chatTemplate.Contains("tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments']", StringComparison.Ordinal)
            ? ToolCallFormat.V31 : ToolCallFormat.V3;

    /// <summary>The tool descriptions for templates that do not render <c>tools</c> themselves (DeepSeek's templates do
    /// not): appended to the system prompt in the shape DeepSeek documents for V3.1's tool use, with the call format the
    /// template's model writes.</summary>
    public static string Describe(IReadOnlyList<ToolDefinition> tools, ToolCallFormat format)
    {
        var sb = new StringBuilder("## Tools\nYou have access to the following tools:\n");
        foreach (ToolDefinition t in tools)
        {
            sb.Append("\n### ").Append(t.Name).Append('\n');
            if (!string.IsNullOrEmpty(t.Description)) sb.Append("Description: ").Append(t.Description).Append('\n');
            sb.Append("\nParameters: ").Append(t.Parameters is { } p ? PythonJson(p) : "{}").Append('\n');
        }
        string call = format == ToolCallFormat.V31
            ? $"{ToolTokens.CallBeginText}tool_call_name{ToolTokens.SepText}tool_call_arguments{ToolTokens.CallEndText}"
            : $"{ToolTokens.CallBeginText}function{ToolTokens.SepText}tool_call_name\n```json\ntool_call_arguments\n```{ToolTokens.CallEndText}";
        sb.Append("\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n")
          .Append(ToolTokens.CallsBeginText).Append(call).Append("{{additional_tool_calls}}").Append(ToolTokens.CallsEndText).Append("\n\n")
          .Append("Where:\n- `tool_call_name` must be an exact match to one of the available tools\n")
          .Append("- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n")
          .Append(format == ToolCallFormat.V31
              ? "- For multiple tool calls, chain them directly without separators or spaces"
              : "- For multiple tool calls, separate them with a newline");
        return sb.ToString();
    }

    /// <summary>JSON the way Python's <c>json.dumps</c> writes it by default (<c>", "</c> and <c>": "</c> between items),
    /// as DeepSeek's tool prompts show schemas; non-ASCII text is kept as it is.</summary>
    internal static string PythonJson(JsonElement e)
    {
        var sb = new StringBuilder();
        Write(e);
        return sb.ToString();

        void Write(JsonElement v)
        {
            switch (v.ValueKind)
            {
                case JsonValueKind.Object:
                    sb.Append('{');
                    bool first = true;
                    foreach (JsonProperty p in v.EnumerateObject())
                    {
                        if (!first) sb.Append(", ");
                        first = false;
                        sb.Append(JsonSerializer.Serialize(p.Name, Relaxed)).Append(": ");
                        Write(p.Value);
                    }
                    sb.Append('}');
                    break;
                case JsonValueKind.Array:
                    sb.Append('[');
                    int i = 0;
                    foreach (JsonElement item in v.EnumerateArray())
                    {
                        if (i++ > 0) sb.Append(", ");
                        Write(item);
                    }
                    sb.Append(']');
                    break;
                case JsonValueKind.String:
                    sb.Append(JsonSerializer.Serialize(v.GetString(), Relaxed));
                    break;
                default:
                    sb.Append(v.GetRawText());
                    break;
            }
        }
    }

    private static readonly JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The grammar of a reply that is only tool calls: one call of <paramref name="only"/> (when given) or
    /// one or more calls of any tool (one when <paramref name="parallel"/> is false), each with arguments that the
    /// tool's parameter schema accepts.</summary>
    /// <exception cref="SchemaException">a parameter schema cannot be enforced; its path starts with the tool's name</exception>
    public static Grammar CallGrammar(IReadOnlyList<ToolDefinition> tools, ToolTokens tokens, ToolCallFormat format, string? only = null, bool parallel = true)
    {
        var b = new GrammarBuilder();
        var json = new JsonGrammar.Builder(b);
        int root = b.Rule("tool-calls");
        var calls = new List<Symbol>();
        foreach (ToolDefinition t in tools)
        {
            if (only is not null && t.Name != only) continue;
            Symbol args;
            try { args = t.Parameters is { } p ? json.Schema(p, "#") : json.Object(json.Value); }
            catch (SchemaException e) { throw new SchemaException($"tool '{t.Name}': {e.Message}", $"{t.Name}{e.Path[1..]}"); }
            calls.Add(format == ToolCallFormat.V31
                ? Token(tokens.CallBegin) + Literal(t.Name) + Token(tokens.Sep) + args + Token(tokens.CallEnd)
                : Token(tokens.CallBegin) + Literal("function") + Token(tokens.Sep) + Literal(t.Name + "\n```json\n") + args + Literal("\n```") + Token(tokens.CallEnd));
        }
        if (calls.Count == 0) throw new ArgumentException($"no tool named '{only}'", nameof(only));
        Symbol one = b.Choice("call", [.. calls]);
        Symbol more = parallel && only is null ? b.Star((format == ToolCallFormat.V3 ? Literal("\n") : Empty) + one, "more-calls") : Empty;
        b.Add(root, Token(tokens.CallsBegin), one, more, Token(tokens.CallsEnd));
        return b.Build(root);
    }
}

/// <summary>Reads tool calls out of generated tokens as they come: from <c>&lt;｜tool▁calls▁begin｜&gt;</c> on, tokens
/// are calls, not text; each call's name is reported once known and its arguments in fragments as they are written
/// (V3's closing <c>\n```</c> held back until the call ends). Markup never reaches the reply's text.</summary>
public sealed class ToolCallParser(ToolTokens tokens, ToolCallFormat format)
{
    private enum State { Idle, BetweenCalls, Header, Name, Fence, Arguments, Done }

    private const string V3Fence = "```json\n", V3Close = "\n```";
    private State _state;
    private readonly Decoder _utf8 = new UTF8Encoding(false).GetDecoder();
    private readonly StringBuilder _text = new();   // the part of the current call being read
    private int _index = -1;

    /// <summary>Calls started so far.</summary>
    public int Calls => _index + 1;

    /// <summary>The tool-call block was closed: every call in it is complete.</summary>
    public bool Closed => _state == State.Done;

    /// <summary>Inside the tool-call block: tokens belong to the parser.</summary>
    public bool Active => _state is not (State.Idle or State.Done);

    /// <summary>Whether <paramref name="token"/> is the parser's (the block's opening token, or anything inside it).</summary>
    public bool Takes(int token) => Active || _state == State.Idle && token == tokens.CallsBegin;

    /// <summary>Reads one token of the block; appends the deltas it completes.</summary>
    public void Push(int token, ReadOnlySpan<byte> bytes, List<ToolCallDelta> output)
    {
        if (token == tokens.CallsBegin) { _state = State.BetweenCalls; return; }
        if (token == tokens.CallsEnd) { Finish(output); _state = State.Done; return; }
        if (token == tokens.CallBegin)
        {
            Finish(output);
            _index++;
            _text.Clear();
            _state = State.Header;
            return;
        }
        if (token == tokens.Sep && _state == State.Header)
        {
            string header = _text.ToString().Trim();
            _text.Clear();
            if (format == ToolCallFormat.V31) Start(header, output);
            _state = format == ToolCallFormat.V31 ? State.Arguments : State.Name;
            return;
        }
        if (token == tokens.CallEnd) { Finish(output); _state = State.BetweenCalls; return; }
        Append(bytes);
        switch (_state)
        {
            case State.Name:
                int newline = _text.ToString().IndexOf('\n');
                if (newline < 0) return;
                Start(_text.ToString(0, newline).Trim(), output);
                _text.Remove(0, newline + 1);
                _state = State.Fence;
                goto case State.Fence;
            case State.Fence:
                string s = _text.ToString();
                if (s.Length < V3Fence.Length && V3Fence.StartsWith(s, StringComparison.Ordinal)) return; // may still be the fence
                if (s.StartsWith(V3Fence, StringComparison.Ordinal)) _text.Remove(0, V3Fence.Length);
                _state = State.Arguments;
                goto case State.Arguments;
            case State.Arguments:
                // V3 ends the arguments with "\n```": hold back any tail that may be (the start of) it. PartialSuffix
                // finds proper prefixes, hence the extra character making the whole fence one.
                int keep = format == ToolCallFormat.V3 ? ReasoningParser.PartialSuffix(_text.ToString(), V3Close + "\u0001") : 0;
                if (_text.Length > keep) Emit(_text.ToString(0, _text.Length - keep), output);
                _text.Remove(0, _text.Length - keep);
                break;
        }
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        Span<char> chars = stackalloc char[bytes.Length + 4];
        int n = _utf8.GetChars(bytes, chars, flush: false);
        _text.Append(chars[..n]);
    }

    private void Start(string name, List<ToolCallDelta> output) =>
        output.Add(new ToolCallDelta(_index, "call_" + Guid.NewGuid().ToString("N")[..24], name, ""));

    private void Emit(string arguments, List<ToolCallDelta> output)
    {
        if (arguments.Length > 0) output.Add(new ToolCallDelta(_index, null, null, arguments));
    }

    /// <summary>The end of a call: what was held back, less V3's closing fence.</summary>
    private void Finish(List<ToolCallDelta> output)
    {
        if (_state == State.Name && _text.Length > 0) Start(_text.ToString().Trim(), output); // cut short before the newline
        else if (_state is State.Arguments or State.Fence)
        {
            string rest = _text.ToString();
            if (format == ToolCallFormat.V3 && rest.EndsWith(V3Close, StringComparison.Ordinal)) rest = rest[..^V3Close.Length];
            Emit(rest, output);
        }
        _text.Clear();
        if (_state is not (State.Idle or State.Done)) _state = State.BetweenCalls;
    }

    /// <summary>End of the reply: whatever is held back goes out.</summary>
    public void Flush(List<ToolCallDelta> output)
    {
        if (Active) Finish(output);
    }
}
