using System.Text.Json;
using static DeepSeekSharp.Inference.Constraints.GrammarBuilder;

namespace DeepSeekSharp.Inference.Constraints;

/// <summary>A JSON schema uses something constrained decoding cannot enforce (or is malformed); names where.</summary>
public sealed class SchemaException(string message, string path) : Exception(message)
{
    /// <summary>JSON-pointer-like path of the offending part of the schema ("" = the root).</summary>
    public string Path { get; } = path;
}

/// <summary>Grammars for JSON output: any JSON object (DeepSeek's JSON mode, <c>{"type": "json_object"}</c>) and
/// the values of a JSON schema (OpenAI structured outputs). Every string they match parses as JSON; a schema's
/// grammar matches only values the schema accepts. Numbers are bounded (at most 16 integer digits, 15 fraction
/// digits, 3 exponent digits) and whitespace between tokens to one space or a newline with up to 20 spaces of
/// indentation, so an output cannot run away inside a number or blank space.
/// <para>Schema support: <c>type</c> (one or a list), <c>properties</c> (generated in the order given; those not in
/// <c>required</c> may be left out; other keys are never generated, which every schema allows unless it requires
/// them), <c>required</c>, <c>additionalProperties</c> (for objects without <c>properties</c>), <c>items</c>,
/// <c>minItems</c>/<c>maxItems</c>, <c>minLength</c>/<c>maxLength</c>, <c>enum</c>, <c>const</c>,
/// <c>anyOf</c>/<c>oneOf</c> (alternatives), <c>allOf</c> of one schema, <c>$ref</c> to <c>#</c>,
/// <c>#/$defs/…</c> or <c>#/definitions/…</c> (recursion allowed), <c>minimum: 0</c> on numbers. Keywords that
/// constrain values in other ways (<c>pattern</c>, <c>format</c>, other bounds, …) raise a
/// <see cref="SchemaException"/>; annotations (<c>title</c>, <c>description</c>, …) are ignored.</para></summary>
public static class JsonGrammar
{
    private static readonly string[] Unsupported =
    [
        "pattern", "format", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "not",
        "if", "then", "else", "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas",
        "dependencies", "contains", "minContains", "maxContains", "minProperties", "maxProperties", "prefixItems",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems", "contentEncoding", "contentMediaType", "$dynamicRef",
    ];

    private const int MaxRepeat = 4096;

    /// <summary>Any JSON object, optionally after a little leading whitespace.</summary>
    public static Grammar AnyObject()
    {
        var j = new Builder();
        int root = j.B.Rule("root");
        j.B.Add(root, j.Lead, j.Object(j.Value));
        return j.B.Build(root);
    }

    /// <summary>Values the JSON schema accepts, optionally after a little leading whitespace.</summary>
    public static Grammar FromSchema(JsonElement schema)
    {
        var j = new Builder { RootSchema = schema };
        int root = j.B.Rule("root");
        j.B.Add(root, j.Lead, j.Compile(schema, "#"));
        return j.B.Build(root);
    }

    /// <summary>JSON rules added to a grammar under construction, for grammars that embed JSON values (tool calls).</summary>
    internal sealed class Builder
    {
        public readonly GrammarBuilder B;
        public JsonElement RootSchema;
        public readonly Symbol Ws, Lead, String, Char, Number, Integer, Value;
        private readonly Dictionary<string, int> _refs = [];

        public Builder(GrammarBuilder? builder = null)
        {
            B = builder ?? new GrammarBuilder();
            Ws = B.Optional(B.Choice("space", AnyOf(" "), Literal("\n") + B.Repeat(AnyOf(" "), 0, 20, "indent")), "ws");
            Lead = B.Repeat(AnyOf(" \t\n"), 0, 8, "lead");
            Symbol hex = Bytes((byte)'0', (byte)'9') | Bytes((byte)'a', (byte)'f') | Bytes((byte)'A', (byte)'F');
            Symbol hexNoD = AnyOf("0123456789abcefABCEF"); // \uD800-\uDFFF would be half a surrogate pair
            Symbol escape = Literal("\\") + B.Choice("escape",
                AnyOf("\"\\/bfnrt"),
                Literal("u") + B.Choice("u4",
                    hexNoD + hex + hex + hex,
                    AnyOf("dD") + Bytes((byte)'0', (byte)'7') + hex + hex));
            Symbol cont = Bytes(0x80, 0xBF);
            Symbol utf8 = B.Choice("utf8",
                Bytes(0xC2, 0xDF) + cont,
                Bytes(0xE0, 0xE0) + Bytes(0xA0, 0xBF) + cont,
                Set([.. Enumerable.Range(0xE1, 12).Select(i => (byte)i), 0xEE, 0xEF]) + cont + cont,
                Bytes(0xED, 0xED) + Bytes(0x80, 0x9F) + cont,
                Bytes(0xF0, 0xF0) + Bytes(0x90, 0xBF) + cont + cont,
                Bytes(0xF1, 0xF3) + cont + cont + cont,
                Bytes(0xF4, 0xF4) + Bytes(0x80, 0x8F) + cont + cont);
            Symbol ascii = Set(Enumerable.Range(0x20, 0x60).Select(i => (byte)i).Where(b => b != '"' && b != '\\'));
            Char = B.Choice("char", ascii, escape, utf8);
            String = B.Choice("string", Literal("\"") + B.Star(Char, "chars") + Literal("\""));
            Symbol digit = Bytes((byte)'0', (byte)'9');
            Symbol natural = B.Choice("natural", Literal("0"), Bytes((byte)'1', (byte)'9') + B.Repeat(digit, 0, 15, "digits"));
            Symbol fraction = B.Optional(Literal(".") + B.Repeat(digit, 1, 15, "fraction"), "frac");
            Symbol exponent = B.Optional(AnyOf("eE") + B.Optional(AnyOf("+-"), "sign") + B.Repeat(digit, 1, 3, "exp"), "exponent");
            Symbol minus = B.Optional(Literal("-"), "minus");
            Integer = B.Choice("integer", minus + natural);
            Number = B.Choice("number", minus + natural + fraction + exponent);
            NonNegativeInteger = B.Choice("nonneg-integer", natural);
            NonNegativeNumber = B.Choice("nonneg-number", natural + fraction + exponent);
            int value = B.Rule("value");
            Value = Ref(value);
            B.Add(value, Object(Value));
            B.Add(value, Array(Value, 0, null));
            B.Add(value, String);
            B.Add(value, Number);
            foreach (string word in (string[])["true", "false", "null"]) B.Add(value, Literal(word));
        }

        private readonly Symbol NonNegativeInteger, NonNegativeNumber;

        /// <summary>An object whose keys are any strings and whose values match <paramref name="value"/>.</summary>
        public Symbol Object(Symbol value)
        {
            Symbol member = String + Ws + Literal(":") + Ws + value;
            return B.Choice("object",
                Literal("{") + Ws + Literal("}"),
                Literal("{") + Ws + member + B.Star(Ws + Literal(",") + Ws + member, "members") + Ws + Literal("}"));
        }

        public Symbol Array(Symbol item, int min, int? max)
        {
            Symbol more = Ws + Literal(",") + Ws + item;
            var alternatives = new List<Symbol>();
            if (min == 0) alternatives.Add(Literal("[") + Ws + Literal("]"));
            if (max is not 0)
                alternatives.Add(Literal("[") + Ws + item + B.Repeat(more, Math.Max(min - 1, 0), max - 1, "items") + Ws + Literal("]"));
            return B.Choice("array", [.. alternatives]);
        }

        /// <summary>A schema's values as a symbol of this grammar (its <c>$ref</c>s resolve within <paramref name="root"/>).</summary>
        public Symbol Schema(JsonElement root, string path)
        {
            RootSchema = root;
            _refs.Clear();
            return Compile(root, path);
        }

        public Symbol Compile(JsonElement s, string path)
        {
            if (s.ValueKind == JsonValueKind.True) return Value;
            if (s.ValueKind == JsonValueKind.False) throw new SchemaException($"the schema at '{path}' accepts nothing", path);
            if (s.ValueKind != JsonValueKind.Object) throw new SchemaException($"the schema at '{path}' must be an object or a boolean", path);
            foreach (string k in Unsupported)
                if (s.TryGetProperty(k, out _))
                    throw new SchemaException($"'{k}' at '{path}' cannot be enforced by constrained decoding", $"{path}/{k}");
            if (Get(s, "$ref") is { } r) return Reference(r, path);
            if (Get(s, "const") is { } c) return Literal(Compact(c));
            if (Get(s, "enum") is { } e)
            {
                if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0)
                    throw new SchemaException($"'enum' at '{path}' must be a non-empty array", $"{path}/enum");
                return B.Choice("enum", [.. e.EnumerateArray().Select(v => Literal(Compact(v))).Distinct()]);
            }
            foreach (string key in (string[])["anyOf", "oneOf"])
                if (Get(s, key) is { } any)
                {
                    if (any.ValueKind != JsonValueKind.Array || any.GetArrayLength() == 0)
                        throw new SchemaException($"'{key}' at '{path}' must be a non-empty array", $"{path}/{key}");
                    return B.Choice(key, [.. any.EnumerateArray().Select((a, i) => Compile(a, $"{path}/{key}/{i}"))]);
                }
            if (Get(s, "allOf") is { } all)
            {
                if (all.ValueKind != JsonValueKind.Array || all.GetArrayLength() != 1)
                    throw new SchemaException($"'allOf' at '{path}' with more than one schema cannot be enforced", $"{path}/allOf");
                return Compile(all[0], $"{path}/allOf/0");
            }
            string[] types = Get(s, "type") switch
            {
                null => s.TryGetProperty("properties", out _) || s.TryGetProperty("additionalProperties", out _) || s.TryGetProperty("required", out _) ? ["object"]
                    : s.TryGetProperty("items", out _) ? ["array"] : [],
                { ValueKind: JsonValueKind.String } t => [t.GetString()!],
                { ValueKind: JsonValueKind.Array } t => [.. t.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()!
                    : throw new SchemaException($"'type' at '{path}' must hold strings", $"{path}/type"))],
                _ => throw new SchemaException($"'type' at '{path}' must be a string or an array of strings", $"{path}/type"),
            };
            if (types.Length == 0) return Value;
            if (types.Length == 1) return Typed(s, types[0], path);
            return B.Choice("types", [.. types.Select(t => Typed(s, t, path))]);
        }

        private Symbol Typed(JsonElement s, string type, string path)
        {
            bool nonNegative = Get(s, "minimum") switch
            {
                null => false,
                { ValueKind: JsonValueKind.Number } m when m.GetDouble() == 0 => true,
                _ => throw new SchemaException($"'minimum' at '{path}' cannot be enforced by constrained decoding (only 0 can)", $"{path}/minimum"),
            };
            switch (type)
            {
                case "string":
                    int min = Count(s, "minLength", path) ?? 0;
                    int? max = Count(s, "maxLength", path);
                    if (min == 0 && max is null) return String;
                    return Literal("\"") + Bounded(Char, min, max, "minLength", path) + Literal("\"");
                case "integer": return nonNegative ? NonNegativeInteger : Integer;
                case "number": return nonNegative ? NonNegativeNumber : Number;
                case "boolean": return B.Choice("boolean", Literal("true"), Literal("false"));
                case "null": return Literal("null");
                case "array":
                {
                    Symbol item = Get(s, "items") is { } items ? Compile(items, $"{path}/items") : Value;
                    int lo = Count(s, "minItems", path) ?? 0;
                    int? hi = Count(s, "maxItems", path);
                    Bounded(item, lo, hi, "minItems", path); // checks the bounds
                    return Array(item, lo, hi);
                }
                case "object": return ObjectOf(s, path);
                default: throw new SchemaException($"'type' at '{path}' names an unknown type '{type}'", $"{path}/type");
            }
        }

        private Symbol Bounded(Symbol item, int min, int? max, string what, string path)
        {
            if (max < min) throw new SchemaException($"the maximum at '{path}' is below '{what}'", path);
            if ((max ?? min) > MaxRepeat) throw new SchemaException($"length bounds above {MaxRepeat} at '{path}' cannot be enforced", path);
            return B.Repeat(item, min, max, "bounded");
        }

        private Symbol ObjectOf(JsonElement s, string path)
        {
            var required = new HashSet<string>();
            if (Get(s, "required") is { } req)
            {
                if (req.ValueKind != JsonValueKind.Array) throw new SchemaException($"'required' at '{path}' must be an array of names", $"{path}/required");
                foreach (JsonElement item in req.EnumerateArray())
                    required.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw new SchemaException($"'required' at '{path}' must hold strings", $"{path}/required"));
            }
            JsonElement? additional = Get(s, "additionalProperties");
            bool closed = additional is { ValueKind: JsonValueKind.False };
            var props = new List<(string Name, Symbol Value, bool Required)>();
            if (Get(s, "properties") is { } properties)
            {
                if (properties.ValueKind != JsonValueKind.Object) throw new SchemaException($"'properties' at '{path}' must be an object", $"{path}/properties");
                foreach (JsonProperty p in properties.EnumerateObject())
                    props.Add((p.Name, Compile(p.Value, $"{path}/properties/{p.Name}"), required.Contains(p.Name)));
            }
            foreach (string name in required.Where(n => props.All(p => p.Name != n)).Order(StringComparer.Ordinal))
            {
                if (closed) throw new SchemaException($"'{name}' is required at '{path}' but 'additionalProperties' is false", $"{path}/required");
                props.Add((name, additional is { } a ? Compile(a, $"{path}/additionalProperties") : Value, true));
            }
            if (props.Count == 0)
                return closed ? Literal("{") + Ws + Literal("}") : Object(additional is { } a ? Compile(a, $"{path}/additionalProperties") : Value);

            // first[i]: the members from property i on when none has been written; rest[i]: the same after one has
            // (each starts with a comma). An optional property may be skipped; the order is the schema's.
            int n = props.Count;
            var first = new int[n + 1];
            var rest = new int[n + 1];
            for (int i = 0; i <= n; i++) { first[i] = B.Rule("first"); rest[i] = B.Rule("rest"); }
            B.Add(first[n]);
            B.Add(rest[n]);
            for (int i = n - 1; i >= 0; i--)
            {
                var (name, value, isRequired) = props[i];
                Symbol member = Literal(Compact(JsonSerializer.SerializeToElement(name))) + Ws + Literal(":") + Ws + value;
                B.Add(first[i], member, Ref(rest[i + 1]));
                B.Add(rest[i], Ws + Literal(",") + Ws + member, Ref(rest[i + 1]));
                if (!isRequired)
                {
                    B.Add(first[i], Ref(first[i + 1]));
                    B.Add(rest[i], Ref(rest[i + 1]));
                }
            }
            return B.Choice("object", Literal("{") + Ws + Ref(first[0]) + Ws + Literal("}"));
        }

        private Symbol Reference(JsonElement r, string path)
        {
            string target = r.ValueKind == JsonValueKind.String ? r.GetString()! : throw new SchemaException($"'$ref' at '{path}' must be a string", $"{path}/$ref");
            if (_refs.TryGetValue(target, out int rule)) return Ref(rule);
            JsonElement resolved = RootSchema;
            if (target != "#")
            {
                string[] parts = target.StartsWith("#/", StringComparison.Ordinal) ? target[2..].Split('/') : [];
                if (parts.Length != 2 || parts[0] is not ("$defs" or "definitions")
                    || !RootSchema.TryGetProperty(parts[0], out JsonElement defs) || defs.ValueKind != JsonValueKind.Object
                    || !defs.TryGetProperty(parts[1].Replace("~1", "/").Replace("~0", "~"), out resolved))
                    throw new SchemaException($"'$ref' '{target}' at '{path}' does not name a schema under #/$defs or #/definitions", $"{path}/$ref");
            }
            rule = _refs[target] = B.Rule("ref");
            B.Add(rule, Compile(resolved, target));
            return Ref(rule);
        }

        private static int? Count(JsonElement s, string key, string path) => Get(s, key) switch
        {
            null => null,
            { ValueKind: JsonValueKind.Number } v when v.TryGetInt32(out int i) && i >= 0 => i,
            _ => throw new SchemaException($"'{key}' at '{path}' must be a non-negative integer", $"{path}/{key}"),
        };

        private static JsonElement? Get(JsonElement o, string name) => o.TryGetProperty(name, out JsonElement v) ? v : null;

        private static readonly JsonSerializerOptions CompactOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

        private static string Compact(JsonElement v) => JsonSerializer.Serialize(v, CompactOptions);
    }
}
