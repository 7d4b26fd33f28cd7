using System.CommandLine;
using System.Text.Json;
using DeepSeekSharp.Model;

namespace DeepSeekSharp.Cli;

/// <summary><c>dss logits --model DIR --tokens 1,2,3 [--decode-from N] [--attention expanded|absorbed] [--mtp] [--dump DIR]</c>:
/// JSON <c>{"logits": [[...], ...]}</c>, one row per input position; <c>--dump</c> also writes every named
/// intermediate of every layer as <c>.npy</c> files (<see cref="TensorRecorder"/>).</summary>
internal static class LogitsCommand
{
    public static Command Create(TextWriter stdout)
    {
        Option<string> model = CliApp.ModelOption();
        var tokens = new Option<string>("--tokens") { Description = "comma-separated token ids", Required = true };
        var decodeFrom = new Option<int?>("--decode-from") { Description = "prefill the first N tokens as one batch, then feed the rest one at a time through the cache" };
        var attention = new Option<string>("--attention") { Description = "force the MLA path everywhere: expanded or absorbed (default: expanded for prefill, absorbed for decode)" };
        attention.AcceptOnlyFromAmong("expanded", "absorbed", "auto");
        var mtp = new Option<bool>("--mtp") { Description = "also print mtp_logits: for each position i but the last, the MTP module's logits for token i+2" };
        var dump = new Option<string?>("--dump") { Description = "also write every named intermediate (attn_norm, q, kv_cmpr, ..., l_out per layer; result_norm, result_output) to this folder as .npy files with an index.json of shapes" };
        var cmd = new Command("logits", "Print the logits of every input position as JSON") { model, tokens, decodeFrom, attention, mtp, dump };
        cmd.SetAction(r =>
        {
            int[] ids = ParseTokens(r.GetValue(tokens)!);
            AttentionMode mode = r.GetValue(attention) switch
            {
                "expanded" => AttentionMode.Expanded,
                "absorbed" => AttentionMode.Absorbed,
                _ => AttentionMode.Auto,
            };
            using DeepSeekModel m = DeepSeekModel.Load(r.GetValue(model)!);
            Run(m, ids, r.GetValue(decodeFrom), mode, r.GetValue(mtp), r.GetValue(dump), stdout);
            return 0;
        });
        return cmd;
    }

    internal static int[] ParseTokens(string text)
    {
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ids[i]))
                throw new FormatException($"--tokens: '{parts[i]}' (item {i + 1}) is not a non-negative integer token id");
        return ids;
    }

    private static void Run(DeepSeekModel model, int[] ids, int? decodeFrom, AttentionMode mode, bool withMtp, string? dump, TextWriter stdout)
    {
        ModelConfig c = model.Config;
        int prefill = decodeFrom ?? ids.Length;
        if (prefill < 1 || prefill > ids.Length)
            throw new ArgumentOutOfRangeException("--decode-from", prefill, $"--decode-from must be in [1, {ids.Length}] (the number of tokens)");
        if (withMtp && model.MtpLayers == 0)
            throw new InvalidOperationException($"--mtp: model '{model.Path}' has no multi-token-prediction weights");
        using InferenceSession s = model.CreateSession(Math.Min(c.MaxPositionEmbeddings, Math.Max(ids.Length, 1)));
        s.Attention = mode;
        TensorRecorder? recorder = dump is null ? null : new TensorRecorder();
        s.Observer = recorder;
        int vocab = c.VocabSize, d = c.Dim;
        var logits = new float[ids.Length * vocab];
        var hidden = new float[ids.Length * d];
        s.Forward(ids.AsSpan(0, prefill), logits.AsSpan(0, prefill * vocab));
        s.LastHidden.CopyTo(hidden);
        for (int p = prefill; p < ids.Length; p++)
        {
            s.Forward(ids.AsSpan(p, 1), logits.AsSpan(p * vocab, vocab));
            s.LastHidden.CopyTo(hidden.AsSpan(p * d, d));
        }
        recorder?.Save(dump!);
        float[]? mtpLogits = null;
        if (withMtp && ids.Length > 1)
        {
            mtpLogits = new float[(ids.Length - 1) * vocab];
            s.ForwardMtp(ids.AsSpan(1), hidden.AsSpan(0, (ids.Length - 1) * d), mtpLogits);
        }
        stdout.Flush();
        using var json = new Utf8JsonWriter(new TextWriterStream(stdout));
        json.WriteStartObject();
        WriteRows(json, "logits", logits, vocab);
        if (withMtp) WriteRows(json, "mtp_logits", mtpLogits ?? [], vocab);
        json.WriteEndObject();
        json.Flush();
        stdout.WriteLine();
    }

    private static void WriteRows(Utf8JsonWriter json, string name, float[] values, int width)
    {
        json.WriteStartArray(name);
        for (int r = 0; r < values.Length / width; r++)
        {
            json.WriteStartArray();
            foreach (float v in values.AsSpan(r * width, width)) json.WriteNumberValue(v);
            json.WriteEndArray();
        }
        json.WriteEndArray();
    }
}

/// <summary>Lets a Utf8JsonWriter write through a TextWriter (UTF-8 bytes decoded back to chars).</summary>
internal sealed class TextWriterStream(TextWriter writer) : Stream
{
    private readonly System.Text.Decoder _decoder = System.Text.Encoding.UTF8.GetDecoder();
    private char[] _chars = new char[4096];
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() => writer.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        int needed = _decoder.GetCharCount(buffer, flush: false);
        if (needed > _chars.Length) _chars = new char[needed];
        int n = _decoder.GetChars(buffer, _chars, flush: false);
        writer.Write(_chars, 0, n);
    }
}
