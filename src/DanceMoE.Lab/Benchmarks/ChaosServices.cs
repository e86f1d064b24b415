using System.Diagnostics;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>The faults <c>bench chaos</c> injects into the local services, through <c>scripts/services.sh</c> (its ports and state from the environment).</summary>
internal static class ChaosServices
{
    public static Task KillNodeAsync(int node, CancellationToken cancellationToken) => RunAsync(cancellationToken, "node", "kill", node.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static Task StartNodeAsync(int node, CancellationToken cancellationToken) => RunAsync(cancellationToken, "node", "start", node.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static Task StopNodeAsync(int node, CancellationToken cancellationToken) => RunAsync(cancellationToken, "node", "stop", node.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static Task StopBrokerAsync(CancellationToken cancellationToken) => RunAsync(cancellationToken, "node", "stop", "all");

    public static Task StartBrokerAsync(CancellationToken cancellationToken) => RunAsync(cancellationToken, "node", "start", "all");

    public static Task StopPostgresAsync(CancellationToken cancellationToken) => RunAsync(cancellationToken, "postgres", "stop");

    public static Task StartPostgresAsync(CancellationToken cancellationToken) => RunAsync(cancellationToken, "postgres", "start");

    private static async Task RunAsync(CancellationToken cancellationToken, params string[] arguments)
    {
        var start = new ProcessStartInfo(Path.Combine(LocalEnvironment.RepositoryRoot, "scripts", "services.sh"))
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new OperationException("cannot run scripts/services.sh");
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var errors = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new OperationException($"services {string.Join(' ', arguments)} failed (exit {process.ExitCode}): {(await errors.ConfigureAwait(false)).Trim()} {(await output.ConfigureAwait(false)).Trim()}");
        }
    }
}
