using DeepSeekSharp.Cli;

ShutdownSignals.UnignoreSigInt(args); // before any Console use: see ShutdownSignals
using var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 1 << 16) { AutoFlush = false };
int rc = CliApp.Run(args, stdout, Console.Error);
stdout.Flush();
return rc;
