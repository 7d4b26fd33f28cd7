using DeepSeekSharp.Inference;
using DeepSeekSharp.Text;

namespace DeepSeekSharp.Tests.Text;

public class StreamingTextTests
{
    [Fact]
    public void Detokenizer_CharacterSplitAcrossTokens_ComesOutOnceWhole()
    {
        Tokenizer tok = TokenizerTests.V3;
        const string text = "a𠜎b"; // a rare CJK Extension B character: several byte-level tokens
        int[] ids = tok.Encode(text, addBos: false);
        Assert.True(ids.Length > 3, "the character should span several tokens");
        var detok = new StreamingDetokenizer(tok);
        List<string> deltas = ids.Select(detok.Push).ToList();
        Assert.Equal(text, string.Concat(deltas));
        Assert.Contains("𠜎", deltas);                       // emitted whole, in one delta
        Assert.DoesNotContain(deltas, d => d.Contains('\uFFFD'));
        Assert.True(deltas.Count(d => d.Length == 0) >= 1); // the partial pieces emitted nothing
    }

    [Fact]
    public void Detokenizer_IncompleteAtEnd_FlushesAReplacementCharacter()
    {
        Tokenizer tok = TokenizerTests.V3;
        int[] ids = tok.Encode("𠜎", addBos: false);
        var detok = new StreamingDetokenizer(tok);
        Assert.Equal("", detok.Push(ids[0]));
        Assert.Equal("\uFFFD", detok.Flush());
    }

    private static (string Reasoning, string Answer) Parse(bool startsInReasoning, params string[] deltas)
    {
        var p = new ReasoningParser(startsInReasoning);
        var pieces = deltas.SelectMany(p.Push).ToList();
        pieces.AddRange(p.Flush());
        return (string.Concat(pieces.Where(x => x.Part == ReplyPart.Reasoning).Select(x => x.Text)),
                string.Concat(pieces.Where(x => x.Part == ReplyPart.Answer).Select(x => x.Text)));
    }

    [Fact]
    public void Reasoning_R1OutputWithoutOpeningTag_SplitsAtClosingTag()
    {
        Assert.Equal(("Let me think.\n", "The answer is 4."), Parse(true, "Let me ", "think.\n</th", "ink>\n\nThe answer", " is 4."));
    }

    [Fact]
    public void Reasoning_OpeningTagPresent_IsDropped()
    {
        Assert.Equal(("hmm", "yes"), Parse(false, "<th", "ink>\nhmm</think>yes"));
        Assert.Equal(("hmm", "yes"), Parse(true, "<think>\nhmm</think>\n\nyes"));
    }

    [Fact]
    public void Reasoning_EmptyThinkBlock_GivesOnlyTheAnswer()
    {
        Assert.Equal(("", "Hi there"), Parse(true, "<think>\n\n</think>\n\nHi there"));
        Assert.Equal(("", "Hi there"), Parse(true, "\n</think>\n\nHi there"));
    }

    [Fact]
    public void Reasoning_NeverClosed_IsAllReasoning()
    {
        Assert.Equal(("still thinking </thi", ""), Parse(true, "still thinking ", "</thi"));
    }

    [Fact]
    public void Reasoning_NonReasoningModel_IsAllAnswer()
    {
        Assert.Equal(("", "Plain answer < not a tag"), Parse(false, "Plain answer", " < not a tag"));
    }

    [Fact]
    public void StopMatcher_StopStringSplitAcrossDeltas_CutsBeforeIt()
    {
        var m = new StopMatcher(["STOP", "\n\n"]);
        Assert.Equal(("Hel", false), m.Push("Hel"));
        Assert.Equal(("lo ", false), m.Push("lo ST"));  // "ST" held back: could start STOP
        Assert.Equal(("", true), m.Push("OP more"));
    }

    [Fact]
    public void StopMatcher_HeldTextThatIsNotAStop_IsReleased()
    {
        var m = new StopMatcher(["STOP"]);
        Assert.Equal(("a ", false), m.Push("a ST"));
        Assert.Equal(("STart", false), m.Push("art"));
        Assert.Equal(("", false), m.Push(""));
        Assert.Equal(("x ", false), m.Push("x S"));   // "S" may start STOP
        Assert.Equal("S", m.Flush());                  // end of stream: it was not a stop string
    }
}
