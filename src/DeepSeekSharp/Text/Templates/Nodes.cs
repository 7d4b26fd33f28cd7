using System.Text;

namespace DeepSeekSharp.Text.Templates;

/// <summary>Variables visible while rendering: a stack of scopes (a for loop body is a scope of its own, as in
/// Jinja, so only namespace attributes carry values out of a loop).</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);

    public object? Get(string name)
    {
        for (Scope? s = this; s is not null; s = s.Parent)
            if (s._vars.TryGetValue(name, out object? v)) return v;
        return Builtins.Global(name);
    }

    public void Set(string name, object? value) => _vars[name] = value;
    public Scope? Parent { get; } = parent;
}

internal abstract class Node
{
    public abstract void Render(Scope scope, StringBuilder output);

    public static void RenderAll(List<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (Node n in nodes) n.Render(scope, output);
    }
}

internal sealed class TextNode(string text) : Node
{
    public override void Render(Scope scope, StringBuilder output) => output.Append(text);
}

internal sealed class PrintNode(Expr expr) : Node
{
    public override void Render(Scope scope, StringBuilder output) => output.Append(Values.ToStr(expr.Eval(scope)));
}

internal sealed class IfNode(List<(Expr Cond, List<Node> Body)> branches, List<Node>? elseBody) : Node
{
    public override void Render(Scope scope, StringBuilder output)
    {
        foreach (var (cond, body) in branches)
            if (Values.Truthy(cond.Eval(scope))) { RenderAll(body, scope, output); return; }
        if (elseBody is not null) RenderAll(elseBody, scope, output);
    }
}

internal sealed class ForNode(List<string> targets, Expr iterable, Expr? filter, List<Node> body, List<Node>? elseBody) : Node
{
    public override void Render(Scope scope, StringBuilder output)
    {
        var items = new List<object?>();
        foreach (object? item in Values.Iterate(iterable.Eval(scope)))
        {
            if (filter is not null)
            {
                var probe = new Scope(scope);
                Bind(probe, item);
                if (!Values.Truthy(filter.Eval(probe))) continue;
            }
            items.Add(item);
        }
        if (items.Count == 0)
        {
            if (elseBody is not null) RenderAll(elseBody, scope, output);
            return;
        }
        for (int i = 0; i < items.Count; i++)
        {
            var inner = new Scope(scope);
            Bind(inner, items[i]);
            inner.Set("loop", new Dictionary<string, object?>
            {
                ["index"] = (long)i + 1, ["index0"] = (long)i, ["revindex"] = (long)(items.Count - i), ["revindex0"] = (long)(items.Count - i - 1),
                ["first"] = i == 0, ["last"] = i == items.Count - 1, ["length"] = (long)items.Count,
                ["previtem"] = i > 0 ? items[i - 1] : Undefined.Instance, ["nextitem"] = i + 1 < items.Count ? items[i + 1] : Undefined.Instance,
            });
            RenderAll(body, inner, output);
        }
    }

    private void Bind(Scope scope, object? item)
    {
        if (targets.Count == 1) { scope.Set(targets[0], item); return; }
        List<object?> parts = Values.Iterate(item).ToList();
        if (parts.Count != targets.Count)
            throw new TemplateException($"cannot unpack {parts.Count} values into {targets.Count} loop variables ({string.Join(", ", targets)})");
        for (int i = 0; i < targets.Count; i++) scope.Set(targets[i], parts[i]);
    }
}

internal sealed class SetNode(string name, string? attr, Expr value) : Node
{
    public override void Render(Scope scope, StringBuilder output)
    {
        object? v = value.Eval(scope);
        if (attr is null) { scope.Set(name, v); return; }
        if (scope.Get(name) is not Namespace ns)
            throw new TemplateException($"'set {name}.{attr}': '{name}' is not a namespace()");
        ns.Values[attr] = v;
    }
}

internal abstract class Expr
{
    public abstract object? Eval(Scope scope);
}

internal sealed class ConstExpr(object? value) : Expr
{
    public override object? Eval(Scope scope) => value;
}

internal sealed class NameExpr(string name) : Expr
{
    public string Name => name;
    public override object? Eval(Scope scope) => scope.Get(name);
}

internal sealed class ListExpr(List<Expr> items) : Expr
{
    public override object? Eval(Scope scope) => items.Select(i => i.Eval(scope)).ToList();
}

internal sealed class DictExpr(List<(Expr Key, Expr Value)> pairs) : Expr
{
    public override object? Eval(Scope scope)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in pairs) d[Values.ToStr(k.Eval(scope))] = v.Eval(scope);
        return d;
    }
}

internal sealed class AttrExpr(Expr target, string name) : Expr
{
    public override object? Eval(Scope scope) => Values.GetAttr(target.Eval(scope), name, target);
}

internal sealed class ItemExpr(Expr target, Expr key) : Expr
{
    public override object? Eval(Scope scope) => Values.GetItem(target.Eval(scope), key.Eval(scope), target);
}

internal sealed class SliceExpr(Expr target, Expr? start, Expr? stop, Expr? step) : Expr
{
    public override object? Eval(Scope scope) =>
        Values.Slice(target.Eval(scope), start?.Eval(scope), stop?.Eval(scope), step?.Eval(scope));
}

internal sealed class CallExpr(Expr target, List<Expr> args, Dictionary<string, Expr> kwargs) : Expr
{
    public override object? Eval(Scope scope)
    {
        object? f = target.Eval(scope);
        List<object?> a = args.Select(x => x.Eval(scope)).ToList();
        Dictionary<string, object?> kw = kwargs.ToDictionary(p => p.Key, p => p.Value.Eval(scope));
        if (f is Callable c) return c.Invoke(a, kw);
        string what = target is NameExpr n ? n.Name : target is AttrExpr ? "attribute" : "value";
        throw new TemplateException($"'{what}' is not callable ({Values.TypeName(f)})");
    }
}

internal sealed class FilterExpr(Expr target, string name, List<Expr> args, Dictionary<string, Expr> kwargs) : Expr
{
    public override object? Eval(Scope scope) =>
        Builtins.Filter(name, target.Eval(scope), args.Select(x => x.Eval(scope)).ToList(), kwargs.ToDictionary(p => p.Key, p => p.Value.Eval(scope)));
}

internal sealed class TestExpr(Expr target, string name, bool negated, List<Expr> args) : Expr
{
    public override object? Eval(Scope scope) =>
        Builtins.Test(name, target.Eval(scope), args.Select(x => x.Eval(scope)).ToList()) != negated;
}

internal sealed class UnaryExpr(string op, Expr operand) : Expr
{
    public override object? Eval(Scope scope)
    {
        object? v = operand.Eval(scope);
        return op switch
        {
            "not" => !Values.Truthy(v),
            "-" => v switch { long l => (object)-l, double d => -d, _ => throw new TemplateException($"bad operand for unary -: {Values.TypeName(v)}") },
            _ => v,
        };
    }
}

internal sealed class BinaryExpr(string op, Expr left, Expr right) : Expr
{
    public override object? Eval(Scope scope)
    {
        if (op == "and") { object? l = left.Eval(scope); return Values.Truthy(l) ? right.Eval(scope) : l; }
        if (op == "or") { object? l = left.Eval(scope); return Values.Truthy(l) ? l : right.Eval(scope); }
        return Values.Binary(op, left.Eval(scope), right.Eval(scope));
    }
}

internal sealed class CondExpr(Expr cond, Expr then, Expr? otherwise) : Expr
{
    public override object? Eval(Scope scope) =>
        Values.Truthy(cond.Eval(scope)) ? then.Eval(scope) : otherwise is null ? Undefined.Instance : otherwise.Eval(scope);
}
