using System.Globalization;
using System.Text;

namespace DeepSeekSharp.Text.Templates;

/// <summary>Jinja's undefined value: prints as empty, is falsy, fails on most other use.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();
}

/// <summary>The object <c>namespace(...)</c> returns: attributes that <c>set ns.x = ...</c> may change from any scope.</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

internal sealed class Callable(string name, Func<List<object?>, Dictionary<string, object?>, object?> body)
{
    public string Name => name;
    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => body(args, kwargs);
}

/// <summary>Python value semantics over: null (None), bool, long, double, string, List&lt;object?&gt;,
/// Dictionary&lt;string, object?&gt; (insertion-ordered), Namespace, Callable, Undefined.</summary>
internal static class Values
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        Namespace => "namespace",
        Callable => "function",
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    /// <summary>Python's str() as Jinja prints values.</summary>
    public static string ToStr(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        null => "None",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        _ => Repr(v),
    };

    private static string FormatFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        string s = d.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.') || s.Contains('E') ? s.Replace("E", "e") : s + ".0";
    }

    /// <summary>Python's repr() for containers and strings.</summary>
    public static string Repr(object? v) => v switch
    {
        string s => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n") + "'",
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}",
        Namespace => "<Namespace>",
        Callable c => $"<function {c.Name}>",
        _ => ToStr(v),
    };

    public static IEnumerable<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys,
        string s => StringChars(s),
        Undefined => [],
        _ => throw new TemplateException($"'{TypeName(v)}' object is not iterable"),
    };

    private static IEnumerable<object?> StringChars(string s)
    {
        for (int i = 0; i < s.Length; i++)
            yield return char.IsHighSurrogate(s[i]) && i + 1 < s.Length ? s.Substring(i++, 2) : s[i].ToString();
    }

    public static object? GetAttr(object? target, string name, Expr source)
    {
        switch (target)
        {
            case Dictionary<string, object?> d:
                if (d.TryGetValue(name, out object? v)) return v;
                return (object?)Builtins.Method(target, name) ?? Undefined.Instance;
            case Namespace ns:
                return ns.Values.TryGetValue(name, out object? nv) ? nv : Undefined.Instance;
            case Undefined:
                throw new TemplateException($"cannot read attribute '{name}' of an undefined value{Describe(source)}");
            case null:
                throw new TemplateException($"'NoneType' object has no attribute '{name}'{Describe(source)}");
            default:
                return (object?)Builtins.Method(target, name) ?? Undefined.Instance;
        }
    }

    private static string Describe(Expr source) => source is NameExpr n ? $" ('{n.Name}')" : "";

    public static object? GetItem(object? target, object? key, Expr source)
    {
        switch (target)
        {
            case Dictionary<string, object?> d:
                return key is string k && d.TryGetValue(k, out object? v) ? v : Undefined.Instance;
            case Namespace ns:
                return key is string nk && ns.Values.TryGetValue(nk, out object? nv) ? nv : Undefined.Instance;
            case List<object?> l when key is long i:
                long idx = i < 0 ? l.Count + i : i;
                return idx >= 0 && idx < l.Count ? l[(int)idx] : Undefined.Instance;
            case string s when key is long i:
                List<object?> chars = StringChars(s).ToList();
                long ci = i < 0 ? chars.Count + i : i;
                return ci >= 0 && ci < chars.Count ? chars[(int)ci] : Undefined.Instance;
            case Undefined:
                throw new TemplateException($"cannot index an undefined value{Describe(source)} with {Repr(key)}");
            case null:
                throw new TemplateException($"'NoneType' object is not subscriptable{Describe(source)}");
            default:
                return GetAttr(target, ToStr(key), source);
        }
    }

    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        long st = step is long s ? s : 1;
        if (st == 0) throw new TemplateException("slice step cannot be zero");
        List<object?> items = target switch
        {
            List<object?> l => l,
            string str => StringChars(str).ToList(),
            _ => throw new TemplateException($"'{TypeName(target)}' object is not sliceable"),
        };
        int n = items.Count;
        long Norm(object? v, long dflt)
        {
            if (v is not long x) return dflt;
            if (x < 0) x += n;
            return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        long a = Norm(start, st > 0 ? 0 : n - 1), b = Norm(stop, st > 0 ? n : -1);
        var result = new List<object?>();
        for (long i = a; st > 0 ? i < b : i > b; i += st) result.Add(items[(int)i]);
        return target is string ? string.Concat(result.Select(ToStr)) : result;
    }

    public static object? Binary(string op, object? l, object? r)
    {
        switch (op)
        {
            case "==": return AreEqual(l, r);
            case "!=": return !AreEqual(l, r);
            case "<": return Compare(l, r) < 0;
            case ">": return Compare(l, r) > 0;
            case "<=": return Compare(l, r) <= 0;
            case ">=": return Compare(l, r) >= 0;
            case "in": return Contains(r, l);
            case "~": return ToStr(l) + ToStr(r);
        }
        if (op == "+")
        {
            if (l is string ls && r is string rs) return ls + rs;
            if (l is List<object?> ll && r is List<object?> rl) return ll.Concat(rl).ToList();
        }
        if (op == "*" && l is string rep && r is long times) return string.Concat(Enumerable.Repeat(rep, (int)Math.Max(times, 0)));
        if (IsNumber(l) && IsNumber(r))
        {
            if (l is long a && r is long b)
                return op switch
                {
                    "+" => (object)(a + b),
                    "-" => a - b,
                    "*" => a * b,
                    "/" => (double)a / b,
                    "//" => b == 0 ? throw new TemplateException("integer division by zero") : (long)Math.Floor((double)a / b),
                    "%" => b == 0 ? throw new TemplateException("integer modulo by zero") : ((a % b) + b) % b,
                    _ => throw new TemplateException($"unknown operator {op}"),
                };
            double x = ToDouble(l), y = ToDouble(r);
            return op switch
            {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                "//" => Math.Floor(x / y),
                "%" => x - y * Math.Floor(x / y),
                _ => throw new TemplateException($"unknown operator {op}"),
            };
        }
        throw new TemplateException($"unsupported operand types for {op}: '{TypeName(l)}' and '{TypeName(r)}'");
    }

    private static bool IsNumber(object? v) => v is long or double or bool;
    private static double ToDouble(object? v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => double.NaN };

    public static bool AreEqual(object? l, object? r)
    {
        if (l is Undefined || r is Undefined) return l is Undefined && r is Undefined;
        if (IsNumber(l) && IsNumber(r)) return ToDouble(l) == ToDouble(r);
        return (l, r) switch
        {
            (null, null) => true,
            (string a, string b) => a == b,
            (List<object?> a, List<object?> b) => a.Count == b.Count && a.Zip(b).All(p => AreEqual(p.First, p.Second)),
            (Dictionary<string, object?> a, Dictionary<string, object?> b) =>
                a.Count == b.Count && a.All(p => b.TryGetValue(p.Key, out object? v) && AreEqual(p.Value, v)),
            _ => ReferenceEquals(l, r),
        };
    }

    private static int Compare(object? l, object? r)
    {
        if (IsNumber(l) && IsNumber(r)) return ToDouble(l).CompareTo(ToDouble(r));
        if (l is string a && r is string b) return string.CompareOrdinal(a, b);
        throw new TemplateException($"cannot compare '{TypeName(l)}' and '{TypeName(r)}'");
    }

    public static bool Contains(object? container, object? item) => container switch
    {
        string s when item is string sub => s.Contains(sub, StringComparison.Ordinal),
        string => throw new TemplateException($"'in <string>' requires string as left operand, not {TypeName(item)}"),
        List<object?> l => l.Any(x => AreEqual(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Namespace ns => item is string nk && ns.Values.ContainsKey(nk),
        _ => throw new TemplateException($"argument of type '{TypeName(container)}' is not iterable"),
    };

    /// <summary>Python's json.dumps(v, ensure_ascii=False) with optional indent, as transformers' tojson filter.</summary>
    public static string ToJson(object? v, int? indent)
    {
        var sb = new StringBuilder();
        WriteJson(sb, v, indent, 0);
        return sb.ToString();
    }

    private static void WriteJson(StringBuilder sb, object? v, int? indent, int depth)
    {
        switch (v)
        {
            case null or Undefined: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FormatFloat(d)); break;
            case string s: JsonString(sb, s); break;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list.Count, indent, depth, i => WriteJson(sb, list[i], indent, depth + 1));
                break;
            case Dictionary<string, object?> dict:
                var pairs = dict.ToList();
                WriteContainer(sb, '{', '}', pairs.Count, indent, depth, i =>
                {
                    JsonString(sb, pairs[i].Key);
                    sb.Append(": ");
                    WriteJson(sb, pairs[i].Value, indent, depth + 1);
                });
                break;
            case Namespace ns: WriteJson(sb, ns.Values, indent, depth); break;
            default: throw new TemplateException($"Object of type {TypeName(v)} is not JSON serializable");
        }
    }

    private static void WriteContainer(StringBuilder sb, char open, char close, int count, int? indent, int depth, Action<int> item)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        for (int i = 0; i < count; i++)
        {
            if (i > 0) sb.Append(indent is null ? ", " : ",");
            if (indent is { } n) sb.Append('\n').Append(' ', n * (depth + 1));
            item(i);
        }
        if (indent is { } m) sb.Append('\n').Append(' ', m * depth);
        sb.Append(close);
    }

    private static void JsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
