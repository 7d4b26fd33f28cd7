using DeepSeekSharp.Cli;

namespace DeepSeekSharp.Tests.Cli;

/// <summary>Runs <c>dss</c> in-process with captured output.</summary>
internal static class CliRunner
{
    public static (int Code, string Stdout, string Stderr) Run(params string[] args) => RunWithInput("", args);

    public static (int Code, string Stdout, string Stderr) RunWithInput(string stdin, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, new StringReader(stdin), stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
