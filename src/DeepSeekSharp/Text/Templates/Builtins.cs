using System.Globalization;

namespace DeepSeekSharp.Text.Templates;

/// <summary>Global functions, filters, tests and methods available to templates.</summary>
internal static class Builtins
{
    private static readonly Dictionary<string, Callable> Globals = new(StringComparer.Ordinal)
    {
        ["namespace"] = new("namespace", (args, kw) =>
        {
            var ns = new Namespace();
            foreach (object? a in args)
                if (a is Dictionary<string, object?> d) foreach (var p in d) ns.Values[p.Key] = p.Value;
            foreach (var p in kw) ns.Values[p.Key] = p.Value;
            return ns;
        }),
        ["range"] = new("range", (args, _) =>
        {
            long start = 0, stop, step = 1;
            if (args.Count == 1) stop = Int(args[0]);
            else { start = Int(args[0]); stop = Int(args[1]); if (args.Count > 2) step = Int(args[2]); }
            if (step == 0) throw new TemplateException("range() step must not be zero");
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
            return list;
        }),
        ["raise_exception"] = new("raise_exception", (args, _) =>
            throw new TemplateException(args.Count > 0 ? Values.ToStr(args[0]) : "raise_exception() called")),
        ["dict"] = new("dict", (_, kw) => new Dictionary<string, object?>(kw, StringComparer.Ordinal)),
        ["strftime_now"] = new("strftime_now", (args, _) => StrftimeNow(args.Count > 0 ? Values.ToStr(args[0]) : "%Y-%m-%d")),
    };

    public static object? Global(string name) => Globals.TryGetValue(name, out Callable? c) ? c : Undefined.Instance;

    private static long Int(object? v) => v switch
    {
        long l => l,
        double d => (long)d,
        bool b => b ? 1 : 0,
        _ => throw new TemplateException($"expected an integer, got {Values.TypeName(v)}"),
    };

    private static string StrftimeNow(string format)
    {
        DateTime now = DateTime.Now;
        return format.Replace("%Y", now.ToString("yyyy", CultureInfo.InvariantCulture)).Replace("%m", now.ToString("MM", CultureInfo.InvariantCulture))
            .Replace("%d", now.ToString("dd", CultureInfo.InvariantCulture)).Replace("%B", now.ToString("MMMM", CultureInfo.InvariantCulture))
            .Replace("%b", now.ToString("MMM", CultureInfo.InvariantCulture)).Replace("%H", now.ToString("HH", CultureInfo.InvariantCulture))
            .Replace("%M", now.ToString("mm", CultureInfo.InvariantCulture));
    }

    public static object? Filter(string name, object? v, List<object?> args, Dictionary<string, object?> kw)
    {
        object? Arg(int i, string key, object? dflt) => i < args.Count ? args[i] : kw.TryGetValue(key, out object? x) ? x : dflt;
        switch (name)
        {
            case "tojson":
                object? indent = Arg(0, "indent", null);
                return Values.ToJson(v, indent is long n ? (int)n : null);
            case "trim": return Values.ToStr(v).Trim();
            case "length" or "count":
                return v switch
                {
                    string s => (long)new StringInfo(s).LengthInTextElements,
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> d => (long)d.Count,
                    Undefined => 0L,
                    _ => throw new TemplateException($"object of type '{Values.TypeName(v)}' has no length"),
                };
            case "upper": return Values.ToStr(v).ToUpperInvariant();
            case "lower": return Values.ToStr(v).ToLowerInvariant();
            case "capitalize": string c = Values.ToStr(v); return c.Length == 0 ? c : char.ToUpperInvariant(c[0]) + c[1..].ToLowerInvariant();
            case "title": return CultureInfo.InvariantCulture.TextInfo.ToTitleCase(Values.ToStr(v).ToLowerInvariant());
            case "default" or "d":
                bool boolean = Values.Truthy(Arg(1, "boolean", false));
                return v is Undefined || boolean && !Values.Truthy(v) ? Arg(0, "default_value", "") : v;
            case "join":
                string sep = Values.ToStr(Arg(0, "d", ""));
                return string.Join(sep, Values.Iterate(v).Select(Values.ToStr));
            case "first": return Values.Iterate(v).FirstOrDefault(Undefined.Instance);
            case "last": return v is List<object?> ll && ll.Count > 0 ? ll[^1] : Values.Iterate(v).LastOrDefault(Undefined.Instance);
            case "list": return Values.Iterate(v).ToList();
            case "reverse": return v is string rs ? new string(rs.Reverse().ToArray()) : Values.Iterate(v).Reverse().ToList();
            case "string": return Values.ToStr(v);
            case "safe" or "e" or "escape" when name == "safe": return v;
            case "int": return v switch { long l => (object)l, double dd => (long)dd, string s when long.TryParse(s.Trim(), out long p) => p, _ => Arg(0, "default", 0L) };
            case "float": return v switch { long l => (object)(double)l, double dd => dd, string s when double.TryParse(s.Trim(), CultureInfo.InvariantCulture, out double p) => p, _ => Arg(0, "default", 0.0) };
            case "abs": return v switch { long l => (object)Math.Abs(l), double dd => Math.Abs(dd), _ => throw new TemplateException("abs of a non-number") };
            case "replace": return Values.ToStr(v).Replace(Values.ToStr(Arg(0, "old", "")), Values.ToStr(Arg(1, "new", "")), StringComparison.Ordinal);
            case "items": return Items(v);
            case "unique": return Values.Iterate(v).Aggregate(new List<object?>(), (acc, x) => { if (!acc.Any(y => Values.AreEqual(x, y))) acc.Add(x); return acc; });
            case "indent":
                int width = (int)Int(Arg(0, "width", 4L));
                string pad = new(' ', width);
                string[] lines = Values.ToStr(v).Split('\n');
                bool first = Values.Truthy(Arg(1, "first", false));
                return string.Join("\n", lines.Select((line, i) => (i == 0 && !first) || line.Length == 0 ? line : pad + line));
            case "map" when Arg(0, "attribute", null) is var attr:
                string? a = kw.TryGetValue("attribute", out object? at) ? Values.ToStr(at) : null;
                if (a is not null) return Values.Iterate(v).Select(x => Values.GetItem(x, a, new ConstExpr(null))).ToList();
                string f = Values.ToStr(attr);
                return Values.Iterate(v).Select(x => Filter(f, x, [], [])).ToList();
            case "selectattr" or "rejectattr":
                string key = Values.ToStr(Arg(0, "attr", ""));
                bool keep = name == "selectattr";
                string? test = args.Count > 1 ? Values.ToStr(args[1]) : null;
                return Values.Iterate(v).Where(x =>
                {
                    object? val = Values.GetItem(x, key, new ConstExpr(null));
                    bool ok = test is null ? Values.Truthy(val) : Test(test, val, args.Skip(2).ToList());
                    return ok == keep;
                }).ToList();
            default:
                throw new NotSupportedException($"chat template: filter '{name}' is not supported");
        }
    }

    public static bool Test(string name, object? v, List<object?> args) => name switch
    {
        "defined" => v is not Undefined,
        "undefined" => v is Undefined,
        "none" => v is null,
        "string" => v is string,
        "number" => v is long or double,
        "integer" => v is long,
        "float" => v is double,
        "boolean" => v is bool,
        "true" => v is true,
        "false" => v is false,
        "mapping" => v is Dictionary<string, object?> or Namespace,
        "sequence" or "iterable" => v is List<object?> or string or Dictionary<string, object?>,
        "callable" => v is Callable,
        "even" => v is long e && e % 2 == 0,
        "odd" => v is long o && o % 2 != 0,
        "eq" or "equalto" or "==" => args.Count > 0 && Values.AreEqual(v, args[0]),
        "ne" or "!=" => args.Count > 0 && !Values.AreEqual(v, args[0]),
        "in" => args.Count > 0 && Values.Contains(args[0], v),
        "lower" => v is string ls && ls == ls.ToLowerInvariant(),
        "upper" => v is string us && us == us.ToUpperInvariant(),
        _ => throw new NotSupportedException($"chat template: test '{name}' is not supported"),
    };

    private static List<object?> Items(object? v) => v switch
    {
        Dictionary<string, object?> d => d.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList(),
        Namespace ns => ns.Values.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList(),
        _ => throw new TemplateException($"'{Values.TypeName(v)}' has no items()"),
    };

    /// <summary>A bound method of a value (<c>s.split('x')</c>, <c>d.items()</c>), or null when there is none.</summary>
    public static Callable? Method(object? target, string name)
    {
        switch (target)
        {
            case string s:
                return name switch
                {
                    "strip" => new(name, (a, _) => a.Count > 0 && a[0] is string cs ? s.Trim(cs.ToCharArray()) : s.Trim()),
                    "lstrip" => new(name, (a, _) => a.Count > 0 && a[0] is string cs ? s.TrimStart(cs.ToCharArray()) : s.TrimStart()),
                    "rstrip" => new(name, (a, _) => a.Count > 0 && a[0] is string cs ? s.TrimEnd(cs.ToCharArray()) : s.TrimEnd()),
                    "split" => new(name, (a, kw) => Split(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"), a.Count > 1 ? Int(a[1]) : kw.TryGetValue("maxsplit", out object? m) ? Int(m) : -1)),
                    "startswith" => new(name, (a, _) => a.Count > 0 && (a[0] is List<object?> l ? l.Any(p => s.StartsWith(Values.ToStr(p), StringComparison.Ordinal)) : s.StartsWith(Values.ToStr(a[0]), StringComparison.Ordinal))),
                    "endswith" => new(name, (a, _) => a.Count > 0 && (a[0] is List<object?> l ? l.Any(p => s.EndsWith(Values.ToStr(p), StringComparison.Ordinal)) : s.EndsWith(Values.ToStr(a[0]), StringComparison.Ordinal))),
                    "upper" => new(name, (_, _) => s.ToUpperInvariant()),
                    "lower" => new(name, (_, _) => s.ToLowerInvariant()),
                    "title" => new(name, (_, _) => CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s.ToLowerInvariant())),
                    "capitalize" => new(name, (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant()),
                    "replace" => new(name, (a, _) => s.Replace(Values.ToStr(a[0]), Values.ToStr(a[1]), StringComparison.Ordinal)),
                    "find" => new(name, (a, _) => (long)s.IndexOf(Values.ToStr(a[0]), StringComparison.Ordinal)),
                    "count" => new(name, (a, _) => { string sub = Values.ToStr(a[0]); long n = 0; for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0 && sub.Length > 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++; return n; }),
                    "join" => new(name, (a, _) => string.Join(s, Values.Iterate(a[0]).Select(Values.ToStr))),
                    _ => null,
                };
            case Dictionary<string, object?> d:
                return name switch
                {
                    "items" => new(name, (_, _) => Items(d)),
                    "keys" => new(name, (_, _) => d.Keys.Select(k => (object?)k).ToList()),
                    "values" => new(name, (_, _) => d.Values.ToList()),
                    "get" => new(name, (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out object? v) ? v : a.Count > 1 ? a[1] : null),
                    _ => null,
                };
            case List<object?> l:
                return name switch
                {
                    "index" => new(name, (a, _) => (long)l.FindIndex(x => Values.AreEqual(x, a[0]))),
                    "count" => new(name, (a, _) => (long)l.Count(x => Values.AreEqual(x, a[0]))),
                    _ => null,
                };
            default:
                return null;
        }
    }

    /// <summary>Python's str.split: no separator splits on runs of whitespace and drops empty parts.</summary>
    private static List<object?> Split(string s, object? sep, long maxSplit)
    {
        var parts = new List<object?>();
        if (sep is null or Undefined)
        {
            string[] words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (maxSplit < 0 || words.Length <= maxSplit + 1) return words.Select(w => (object?)w).ToList();
            // keep the remainder after maxSplit words intact
            string rest = s.TrimStart();
            for (int i = 0; i < maxSplit; i++)
            {
                int end = 0;
                while (end < rest.Length && !char.IsWhiteSpace(rest[end])) end++;
                parts.Add(rest[..end]);
                rest = rest[end..].TrimStart();
            }
            parts.Add(rest);
            return parts;
        }
        string separator = Values.ToStr(sep);
        if (separator.Length == 0) throw new TemplateException("split(): empty separator");
        int start = 0;
        for (long n = 0; maxSplit < 0 || n < maxSplit; n++)
        {
            int at = s.IndexOf(separator, start, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s[start..at]);
            start = at + separator.Length;
        }
        parts.Add(s[start..]);
        return parts;
    }
}
