using System.Globalization;

namespace DeepSeekSharp.Text.Templates;

/// <summary>Recursive-descent parser for the Jinja subset chat templates use: text, <c>{{ expr }}</c>,
/// if/elif/else, for (with <c>loop</c>, an optional filter and else), set (names and namespace attributes).
/// Expressions follow Jinja's precedence: conditional, or, and, not, comparisons/in/is, ~, + -, * / // %, unary,
/// then postfix (attribute, subscript/slice, call) and filters.</summary>
internal sealed class TemplateParser(List<Tok> toks)
{
    private int _i;

    public static List<Node> Parse(string source)
    {
        var p = new TemplateParser(TemplateLexer.Lex(source));
        List<Node> body = p.ParseBody(out string? end);
        if (end is not null) throw new TemplateException($"unexpected '{{% {end} %}}' without an opening tag");
        return body;
    }

    private Tok Peek(int k = 0) => toks[Math.Min(_i + k, toks.Count - 1)];
    private Tok Next() => toks[_i++];
    private bool IsOp(string op) => Peek().Kind == TokKind.Op && Peek().Value == op;
    private bool IsName(string name, int k = 0) => Peek(k).Kind == TokKind.Name && Peek(k).Value == name;

    private void Expect(TokKind kind, string? value = null)
    {
        Tok t = Next();
        if (t.Kind != kind || value is not null && t.Value != value)
            throw new TemplateException($"expected {value ?? kind.ToString()} near offset {t.Offset}, found '{t.Value}' ({t.Kind})");
    }

    private string ExpectName()
    {
        Tok t = Next();
        if (t.Kind != TokKind.Name) throw new TemplateException($"expected a name near offset {t.Offset}, found '{t.Value}'");
        return t.Value;
    }

    /// <summary>Parses nodes until a block tag whose keyword is not a statement start; returns that keyword.</summary>
    private List<Node> ParseBody(out string? endKeyword)
    {
        var nodes = new List<Node>();
        while (true)
        {
            Tok t = Peek();
            switch (t.Kind)
            {
                case TokKind.End:
                    endKeyword = null;
                    return nodes;
                case TokKind.Text:
                    _i++;
                    nodes.Add(new TextNode(t.Value));
                    break;
                case TokKind.PrintOpen:
                    _i++;
                    nodes.Add(new PrintNode(ParseExpr()));
                    Expect(TokKind.Close);
                    break;
                case TokKind.BlockOpen:
                    string keyword = Peek(1).Value;
                    if (keyword is "if" or "for" or "set")
                    {
                        _i += 2;
                        nodes.Add(keyword switch { "if" => ParseIf(), "for" => ParseFor(), _ => ParseSet() });
                        break;
                    }
                    _i += 2;
                    endKeyword = keyword;
                    return nodes;
                default:
                    throw new TemplateException($"unexpected token '{t.Value}' near offset {t.Offset}");
            }
        }
    }

    private Node ParseIf()
    {
        var branches = new List<(Expr, List<Node>)>();
        Expr cond = ParseExpr();
        Expect(TokKind.Close);
        while (true)
        {
            List<Node> body = ParseBody(out string? end);
            branches.Add((cond, body));
            switch (end)
            {
                case "elif":
                    cond = ParseExpr();
                    Expect(TokKind.Close);
                    continue;
                case "else":
                    Expect(TokKind.Close);
                    List<Node> elseBody = ParseBody(out string? end2);
                    if (end2 != "endif") throw new TemplateException($"expected endif, found '{end2 ?? "end of template"}'");
                    Expect(TokKind.Close);
                    return new IfNode(branches, elseBody);
                case "endif":
                    Expect(TokKind.Close);
                    return new IfNode(branches, null);
                default:
                    throw new TemplateException($"'if' block ends with '{end ?? "end of template"}'; expected elif, else or endif");
            }
        }
    }

    private Node ParseFor()
    {
        var targets = new List<string> { ExpectName() };
        while (IsOp(",")) { _i++; targets.Add(ExpectName()); }
        Expect(TokKind.Name, "in");
        Expr iterable = ParseOr(); // not ParseExpr: a trailing 'if' is the loop filter
        Expr? filter = null;
        if (IsName("if")) { _i++; filter = ParseOr(); }
        Expect(TokKind.Close);
        List<Node> body = ParseBody(out string? end);
        List<Node>? elseBody = null;
        if (end == "else")
        {
            Expect(TokKind.Close);
            elseBody = ParseBody(out end);
        }
        if (end != "endfor") throw new TemplateException($"'for' block ends with '{end ?? "end of template"}'; expected endfor");
        Expect(TokKind.Close);
        return new ForNode(targets, iterable, filter, body, elseBody);
    }

    private Node ParseSet()
    {
        string name = ExpectName();
        string? attr = null;
        if (IsOp(".")) { _i++; attr = ExpectName(); }
        if (!IsOp("=")) throw new TemplateException($"'set {name}' without '=' (block set is not supported)");
        _i++;
        Expr value = ParseExpr();
        if (IsOp(","))
        {
            var items = new List<Expr> { value };
            while (IsOp(",")) { _i++; items.Add(ParseExpr()); }
            value = new ListExpr(items);
        }
        Expect(TokKind.Close);
        return new SetNode(name, attr, value);
    }

    public Expr ParseExpr()
    {
        Expr e = ParseOr();
        if (!IsName("if")) return e;
        _i++;
        Expr cond = ParseOr();
        Expr? otherwise = null;
        if (IsName("else")) { _i++; otherwise = ParseExpr(); }
        return new CondExpr(cond, e, otherwise);
    }

    private Expr ParseOr()
    {
        Expr e = ParseAnd();
        while (IsName("or")) { _i++; e = new BinaryExpr("or", e, ParseAnd()); }
        return e;
    }

    private Expr ParseAnd()
    {
        Expr e = ParseNot();
        while (IsName("and")) { _i++; e = new BinaryExpr("and", e, ParseNot()); }
        return e;
    }

    private Expr ParseNot()
    {
        if (IsName("not")) { _i++; return new UnaryExpr("not", ParseNot()); }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        Expr e = ParseConcat();
        while (true)
        {
            if (Peek().Kind == TokKind.Op && Peek().Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
                e = new BinaryExpr(Next().Value, e, ParseConcat());
            else if (IsName("in")) { _i++; e = new BinaryExpr("in", e, ParseConcat()); }
            else if (IsName("not") && IsName("in", 1)) { _i += 2; e = new UnaryExpr("not", new BinaryExpr("in", e, ParseConcat())); }
            else if (IsName("is"))
            {
                _i++;
                bool negated = false;
                if (IsName("not")) { _i++; negated = true; }
                string test = ExpectName();
                var args = new List<Expr>();
                if (IsOp("(")) args = ParseArgs(out _);
                else if (Peek().Kind is TokKind.String or TokKind.Int or TokKind.Float || Peek().Kind == TokKind.Name && Peek().Value is not ("and" or "or" or "else" or "if"))
                    args.Add(ParsePostfix());
                e = new TestExpr(e, test, negated, args);
            }
            else return e;
        }
    }

    private Expr ParseConcat()
    {
        Expr e = ParseAdd();
        while (IsOp("~")) { _i++; e = new BinaryExpr("~", e, ParseAdd()); }
        return e;
    }

    private Expr ParseAdd()
    {
        Expr e = ParseMul();
        while (IsOp("+") || IsOp("-")) e = new BinaryExpr(Next().Value, e, ParseMul());
        return e;
    }

    private Expr ParseMul()
    {
        Expr e = ParseUnary();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) e = new BinaryExpr(Next().Value, e, ParseUnary());
        return e;
    }

    /// <summary>Unary minus binds tighter than filters, as in Jinja: <c>-3|abs</c> is <c>abs(-3)</c>.</summary>
    private Expr ParseUnary(bool withFilters = true)
    {
        if (!IsOp("-") && !IsOp("+")) return ParsePostfix(withFilters);
        Expr e = new UnaryExpr(Next().Value, ParseUnary(withFilters: false));
        return withFilters ? ParseFilters(e) : e;
    }

    private Expr ParsePostfix(bool withFilters = true)
    {
        Expr e = ParsePrimary();
        while (true)
        {
            if (IsOp(".")) { _i++; e = new AttrExpr(e, ExpectName()); }
            else if (IsOp("[")) { _i++; e = ParseSubscript(e); }
            else if (IsOp("(")) { List<Expr> args = ParseArgs(out var kwargs); e = new CallExpr(e, args, kwargs); }
            else return withFilters ? ParseFilters(e) : e;
        }
    }

    private Expr ParseFilters(Expr e)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                _i++;
                string name = ExpectName();
                List<Expr> args = [];
                Dictionary<string, Expr> kwargs = [];
                if (IsOp("(")) args = ParseArgs(out kwargs);
                e = new FilterExpr(e, name, args, kwargs);
            }
            else return e;
        }
    }

    private Expr ParseSubscript(Expr target)
    {
        Expr? Part() => IsOp(":") || IsOp("]") ? null : ParseExpr();
        Expr? start = Part();
        if (IsOp("]")) { _i++; return new ItemExpr(target, start!); }
        Expect(TokKind.Op, ":");
        Expr? stop = Part();
        Expr? step = null;
        if (IsOp(":")) { _i++; step = Part(); }
        Expect(TokKind.Op, "]");
        return new SliceExpr(target, start, stop, step);
    }

    private List<Expr> ParseArgs(out Dictionary<string, Expr> kwargs)
    {
        Expect(TokKind.Op, "(");
        var args = new List<Expr>();
        kwargs = new Dictionary<string, Expr>();
        while (!IsOp(")"))
        {
            if (Peek().Kind == TokKind.Name && Peek(1).Kind == TokKind.Op && Peek(1).Value == "=")
            {
                string key = Next().Value;
                _i++;
                kwargs[key] = ParseExpr();
            }
            else args.Add(ParseExpr());
            if (!IsOp(",")) break;
            _i++;
        }
        Expect(TokKind.Op, ")");
        return args;
    }

    private Expr ParsePrimary()
    {
        Tok t = Next();
        switch (t.Kind)
        {
            case TokKind.String:
                string s = t.Value;
                while (Peek().Kind == TokKind.String) s += Next().Value; // adjacent literals concatenate
                return new ConstExpr(s);
            case TokKind.Int: return new ConstExpr(long.Parse(t.Value, CultureInfo.InvariantCulture));
            case TokKind.Float: return new ConstExpr(double.Parse(t.Value, CultureInfo.InvariantCulture));
            case TokKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new ConstExpr(true),
                    "false" or "False" => new ConstExpr(false),
                    "none" or "None" => new ConstExpr(null),
                    _ => new NameExpr(t.Value),
                };
            case TokKind.Op when t.Value == "(":
                Expr inner = ParseExpr();
                if (IsOp(","))
                {
                    var items = new List<Expr> { inner };
                    while (IsOp(",")) { _i++; if (IsOp(")")) break; items.Add(ParseExpr()); }
                    inner = new ListExpr(items);
                }
                Expect(TokKind.Op, ")");
                return inner;
            case TokKind.Op when t.Value == "[":
                var list = new List<Expr>();
                while (!IsOp("]")) { list.Add(ParseExpr()); if (!IsOp(",")) break; _i++; }
                Expect(TokKind.Op, "]");
                return new ListExpr(list);
            case TokKind.Op when t.Value == "{":
                var pairs = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    Expr k = ParseExpr();
                    Expect(TokKind.Op, ":");
                    pairs.Add((k, ParseExpr()));
                    if (!IsOp(",")) break;
                    _i++;
                }
                Expect(TokKind.Op, "}");
                return new DictExpr(pairs);
            default:
                throw new TemplateException($"unexpected '{t.Value}' near offset {t.Offset}");
        }
    }
}
