using System.Net;
using System.Text;
using System.Text.Json;

namespace DeepSeekSharp.Tests.Server;

/// <summary>Mutated request bodies get 200 or a 4xx with an OpenAI error body — never a 500 — and the server keeps
/// serving.</summary>
public class RequestMutationTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private const string Valid = """{"model":"v3-tiny-random","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"},{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","content":"42"}],"max_tokens":2,"temperature":0.5,"top_p":0.9,"stop":["x"],"seed":1,"stream":false}""";

    [Fact]
    public async Task MutatedBodies_NeverCauseAServerError()
    {
        var rng = new Random(7);
        using HttpClient http = f.Http();
        string alphabet = "{}[]\":,0123456789-.eE truefalsnul\\u00e9\ud83d";
        for (int trial = 0; trial < 80; trial++)
        {
            var body = new StringBuilder(Valid);
            int edits = 1 + rng.Next(3);
            for (int e = 0; e < edits; e++)
            {
                int at = rng.Next(body.Length);
                switch (rng.Next(3))
                {
                    case 0: body[at] = alphabet[rng.Next(alphabet.Length)]; break;
                    case 1: body.Remove(at, Math.Min(1 + rng.Next(8), body.Length - at)); break;
                    default: body.Insert(at, alphabet[rng.Next(alphabet.Length)]); break;
                }
            }
            HttpResponseMessage r = await http.PostAsync("/v1/chat/completions", new StringContent(body.ToString(), Encoding.UTF8, "application/json"));
            int status = (int)r.StatusCode;
            string text = await r.Content.ReadAsStringAsync();
            Assert.True(status == 200 || status is >= 400 and < 500, $"{status} for {body}: {text}");
            if (status != 200)
                Assert.Equal(JsonValueKind.String, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("message").ValueKind);
        }
        HttpResponseMessage ok = await http.PostAsync("/v1/chat/completions", new StringContent(Valid, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }
}
