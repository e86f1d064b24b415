using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace DanceMoE.Hosting;

/// <summary>The options a host registered with <c>ValidateOnStart</c>, checked before anything starts.</summary>
public static partial class StartupOptions
{
    /// <summary>
    /// Validates them now. The host's own start does so only once it has built its hosted services, the bus among them,
    /// whose disposal then warns that it failed to stop a bus that never started.
    /// </summary>
    /// <exception cref="OptionsValidationException">An option is invalid; each failure names its configuration key (<c>PlacementJob:Cron</c>).</exception>
    public static void ValidateOptions(this IHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        try
        {
            host.Services.GetService<IStartupValidator>()?.Validate();
        }
        catch (AggregateException ex) when (ex.InnerExceptions.All(e => e is OptionsValidationException))
        {
            var failures = ex.InnerExceptions.Cast<OptionsValidationException>().ToList();
            throw new OptionsValidationException(failures[0].OptionsName, failures[0].OptionsType, [.. failures.SelectMany(Failures)]);
        }
        catch (OptionsValidationException ex)
        {
            throw new OptionsValidationException(ex.OptionsName, ex.OptionsType, [.. Failures(ex)]);
        }
    }

    // ValidateDataAnnotations words each failure "DataAnnotation validation failed for 'T' members: 'M' with the error: 'E'.";
    // the key is what an operator sets, the type is not.
    private static IEnumerable<string> Failures(OptionsValidationException ex)
    {
        var section = ex.OptionsType.GetField("Section", BindingFlags.Public | BindingFlags.Static)?.GetRawConstantValue() as string;
        foreach (var failure in ex.Failures)
        {
            var match = DataAnnotationFailure().Match(failure);
            if (!match.Success)
            {
                yield return failure;
                continue;
            }

            var (members, error) = (match.Groups[1].Value, match.Groups[2].Value);
            yield return section is null || error.Contains(section + ":", StringComparison.Ordinal)
                ? error
                : $"{string.Join(", ", members.Split(',', StringSplitOptions.TrimEntries).Select(m => section + ":" + m))}: {error}";
        }
    }

    [GeneratedRegex("^DataAnnotation validation failed for '[^']*' members: '([^']*)' with the error: '(.*)'\\.$", RegexOptions.Singleline)]
    private static partial Regex DataAnnotationFailure();
}
