using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Tests.Cli;

/// <summary><c>dss logits --dump</c>: named per-layer intermediates, checked against the reference's hidden state after
/// the final norm and logits (tests/data/train/*/forward.safetensors, float64 from DeepSeek's model.py).</summary>
public class LogitsDumpTests
{
    private static string Data(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "data", .. parts]);

    private static int[][] InputIds(string name)
    {
        using JsonDocument j = JsonDocument.Parse(File.ReadAllText(Data("train", name, "batch.json")));
        return [.. j.RootElement.GetProperty("input_ids").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetInt32()).ToArray())];
    }

    private static string Dump(string name, int[] ids, params string[] extra)
    {
        string dir = Path.Combine(TestScratch.Root, $"dss-dump-{Guid.NewGuid():N}");
        var (code, _, stderr) = CliRunner.Run(["logits", "--model", Data(name), "--tokens", string.Join(",", ids), "--dump", dir, .. extra]);
        Assert.True(code == 0, stderr);
        return dir;
    }

    [Theory]
    [InlineData("v3-tiny", 0)]
    [InlineData("v3-tiny", 1)]
    [InlineData("v2-lite-tiny", 0)]
    public void Dump_ResultNormAndOutput_MatchReferenceHiddenStateAndLogits(string name, int row)
    {
        int[] ids = InputIds(name)[row];
        string dir = Dump(name, ids);
        try
        {
            var reference = F64SafeTensors.Read(Data("train", name, "forward.safetensors"));
            var (hidden, hShape) = Npy.Read(Path.Combine(dir, "result_norm.npy"));
            var (logits, lShape) = Npy.Read(Path.Combine(dir, "result_output.npy"));
            var (refHidden, refHShape) = reference["hidden_after_final_norm"]; // [2, 16, H]
            var (refLogits, refLShape) = reference["logits"];                  // [2, 16, V]
            Assert.Equal([ids.Length, (int)refHShape[2]], hShape);
            Assert.Equal([ids.Length, (int)refLShape[2]], lShape);
            int h = hShape[1], v = lShape[1];
            for (int p = 0; p < ids.Length; p++)
            {
                // Golden README: a float32 engine stays within 1e-4 of the reference (max |ours − ref| / max |ref|).
                Compare.Close(hidden.AsSpan(p * h, h), refHidden.AsSpan((row * ids.Length + p) * h, h), 1e-4, $"{name} result_norm position {p}");
                Compare.Close(logits.AsSpan(p * v, v), refLogits.AsSpan((row * ids.Length + p) * v, v), 1e-4, $"{name} result_output position {p}");
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Dump_NamesLayersAndShapes_AreStable()
    {
        // v3-tiny: hidden 64, 3 layers (layer 0 dense), 4 heads, kv_lora 32, nope/rope/v 16/16/16, 16 routed experts.
        int[] ids = InputIds("v3-tiny")[0][..5];
        string dir = Dump("v3-tiny", ids, "--decode-from", "3"); // a prefill and two decode steps: one row per position
        try
        {
            var expected = new List<(string, int, int[])>();
            for (int l = 0; l < 3; l++)
            {
                expected.AddRange([("attn_norm", l, [5, 64]), ("q", l, [5, 4 * 32]), ("kv_cmpr", l, [5, 32 + 16]), ("kqv_out", l, [5, 4 * 16]),
                    ("attn_out", l, [5, 64]), ("ffn_inp", l, [5, 64]), ("ffn_norm", l, [5, 64])]);
                if (l > 0) expected.Add(("ffn_moe_logits", l, [5, 16]));
                expected.AddRange([("ffn_out", l, [5, 64]), ("l_out", l, [5, 64])]);
            }
            expected.AddRange([("result_norm", -1, [5, 64]), ("result_output", -1, [5, 256])]);

            using JsonDocument index = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "index.json")));
            var actual = index.RootElement.GetProperty("tensors").EnumerateArray()
                .Select(t => (t.GetProperty("name").GetString()!, t.GetProperty("layer").GetInt32(), t.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
                .ToList();
            Assert.Equal(expected.Select(e => $"{e.Item1}/{e.Item2}/{string.Join("x", e.Item3)}"), actual.Select(e => $"{e.Item1}/{e.Item2}/{string.Join("x", e.Item3)}"));
            foreach (var (n, l, shape) in expected)
                Assert.Equal(shape, Npy.Read(Path.Combine(dir, l < 0 ? $"{n}.npy" : $"{n}-{l}.npy")).Shape);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Dump_LayerOutput_IsTheResidualStreamPlusTheFeedForwardOutput()
    {
        int[] ids = InputIds("v2-lite-tiny")[1][..4];
        string dir = Dump("v2-lite-tiny", ids);
        try
        {
            var (lOut, shape) = Npy.Read(Path.Combine(dir, "l_out-2.npy"));
            var (ffnInp, _) = Npy.Read(Path.Combine(dir, "ffn_inp-2.npy"));
            var (ffnOut, _) = Npy.Read(Path.Combine(dir, "ffn_out-2.npy"));
            // l_out = ffn_inp + ffn_out, element for element (the residual add).
            for (int i = 0; i < shape[0] * shape[1]; i++) Assert.Equal(ffnInp[i] + ffnOut[i], lOut[i]);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}

/// <summary>Reads the float32 2-D <c>.npy</c> files <c>--dump</c> writes.</summary>
internal static class Npy
{
    public static (float[] Values, int[] Shape) Read(string path)
    {
        byte[] b = File.ReadAllBytes(path);
        Assert.True(b.Length > 10 && b[0] == 0x93 && Encoding.ASCII.GetString(b, 1, 5) == "NUMPY", $"{path} is not a .npy file");
        int headerLen = BitConverter.ToUInt16(b, 8);
        string header = Encoding.ASCII.GetString(b, 10, headerLen);
        Assert.Equal(0, (10 + headerLen) % 64);
        Assert.Contains("'descr': '<f4'", header);
        string dims = header[(header.IndexOf("'shape': (", StringComparison.Ordinal) + 10)..];
        int[] shape = [.. dims[..dims.IndexOf(')')].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse)];
        float[] values = new float[(b.Length - 10 - headerLen) / 4];
        Buffer.BlockCopy(b, 10 + headerLen, values, 0, values.Length * 4);
        Assert.Equal(shape.Aggregate(1, (x, y) => x * y), values.Length);
        return (values, shape);
    }
}
