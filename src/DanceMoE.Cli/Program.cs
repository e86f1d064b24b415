using DanceMoE.Cli;

return await CommandLine.RunAsync(args).ConfigureAwait(false);
