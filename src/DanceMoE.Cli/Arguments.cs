using System.Globalization;

namespace DanceMoE.Cli;

/// <summary>
/// Positional words and `--name value` / `--flag` options of one command line, as the verbs still behind
/// <see cref="Verbs.LegacyBridge"/> read them (transitional). Every option must be read by the command;
/// <see cref="EnsureAllUsed"/> rejects the rest.
/// </summary>
public sealed class Arguments
{
    private readonly List<string> _positional = [];
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public Arguments(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (var i = 0; i < list.Count; i++)
        {
            var arg = list[i];
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.Length > 2)
            {
                var name = arg[2..];
                string? value = null;
                var eq = name.IndexOf('=', StringComparison.Ordinal);
                if (eq >= 0)
                {
                    value = name[(eq + 1)..];
                    name = name[..eq];
                }
                else if (i + 1 < list.Count && !list[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    value = list[++i];
                }

                if (!_options.TryAdd(name, value))
                {
                    throw new UsageException($"option --{name} given twice");
                }
            }
            else
            {
                _positional.Add(arg);
            }
        }
    }

    public IReadOnlyList<string> Positional => _positional;

    public string Positional0(string what) =>
        _positional.Count > 0 ? _positional[0] : throw new UsageException($"missing {what}");

    public bool Flag(string name)
    {
        _used.Add(name);
        if (!_options.TryGetValue(name, out var value))
        {
            return false;
        }

        return value is null ? true : throw new UsageException($"--{name} takes no value (got '{value}')");
    }

    public string? Option(string name)
    {
        _used.Add(name);
        if (!_options.TryGetValue(name, out var value))
        {
            return null;
        }

        return value ?? throw new UsageException($"--{name} needs a value");
    }

    public string Required(string name) => Option(name) ?? throw new UsageException($"missing --{name}");

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Reads as the option's type at call sites: args.Int(\"seed\", 0).")]
    public int Int(string name, int fallback, int min = int.MinValue, int max = int.MaxValue) =>
        (int)Number(name, fallback, min, max, s => int.Parse(s, NumberStyles.Integer, CultureInfo.InvariantCulture));

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "Reads as the option's type at call sites.")]
    public double Double(string name, double fallback, double min = double.MinValue, double max = double.MaxValue) =>
        Number(name, fallback, min, max, s => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture));

    /// <summary>Fails on options that no part of the command read: a typo must not be ignored.</summary>
    public void EnsureAllUsed(int maxPositional)
    {
        var unknown = _options.Keys.Where(k => !_used.Contains(k)).ToList();
        if (unknown.Count > 0)
        {
            throw new UsageException($"unknown option(s): {string.Join(", ", unknown.Select(u => "--" + u))}");
        }

        if (_positional.Count > maxPositional)
        {
            throw new UsageException($"unexpected argument '{_positional[maxPositional]}'");
        }
    }

    private double Number(string name, double fallback, double min, double max, Func<string, double> parse)
    {
        var text = Option(name);
        if (text is null)
        {
            return fallback;
        }

        double value;
        try
        {
            value = parse(text);
        }
        catch (FormatException)
        {
            throw new UsageException($"--{name} must be a number (got '{text}')");
        }
        catch (OverflowException)
        {
            throw new UsageException($"--{name} is out of range (got '{text}')");
        }

        if (double.IsNaN(value) || value < min || value > max)
        {
            throw new UsageException($"--{name} must be between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)} (got '{text}')");
        }

        return value;
    }
}
