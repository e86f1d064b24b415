using DanceMoE.Coordinator;
using DanceMoE.Hosting;
using DanceMoE.Model;
using Microsoft.Extensions.Hosting;

// The flags of `dancemoe coordinator`, or environment variables (PlacementJob__Algorithm, ConnectionStrings__rabbitmq).
try
{
    using var host = CoordinatorHost.Build(CoordinatorConfiguration.FromCommandLine(args));
    await host.StartCoordinatorAsync(CancellationToken.None).ConfigureAwait(false);
    await host.WaitForShutdownAsync().ConfigureAwait(false);
    return 0;
}
catch (Exception ex) when (ex is ModelFormatException or FileNotFoundException or DirectoryNotFoundException)
{
    await Console.Error.WriteLineAsync($"dancemoe-coordinator: cannot read the model manifest: {ex.Message}").ConfigureAwait(false);
    return 2;
}
catch (HostFlagException ex)
{
    await Console.Error.WriteLineAsync($"dancemoe-coordinator: {ex.Message}").ConfigureAwait(false);
    return 2;
}
catch (InvalidOperationException ex) when (CoordinatorHost.IsUnconvertibleSetting(ex))
{
    await Console.Error.WriteLineAsync($"dancemoe-coordinator: {ex.Message}").ConfigureAwait(false);
    return 2;
}
catch (HostStartupException ex)
{
    await Console.Error.WriteLineAsync($"dancemoe-coordinator: {ex.Message}").ConfigureAwait(false);
    return ex.ExitCode;
}
