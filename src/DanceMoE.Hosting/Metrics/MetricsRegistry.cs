using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace DanceMoE.Hosting.Metrics;

/// <summary>
/// Aggregates the measurements of the given meters with a <see cref="MeterListener"/> and writes them in the Prometheus
/// text format (0.0.4). Instrument names are the Prometheus names already (<c>dancemoe_request_duration_seconds</c>);
/// counters get their <c>_total</c> suffix here. At most four tags per measurement.
/// </summary>
public sealed class MetricsRegistry : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<Instrument, InstrumentState> _states = new();
    private readonly HashSet<Meter> _meters;
    private readonly Lock _scrape = new();

    public MetricsRegistry(IEnumerable<Meter> meters)
    {
        _meters = [.. meters];
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (_meters.Contains(instrument.Meter))
            {
                var state = _states.GetOrAdd(instrument, static i => new InstrumentState(i));
                listener.EnableMeasurementEvents(instrument, state);
            }
        };
        _listener.MeasurementsCompleted = (instrument, _) => _states.TryRemove(instrument, out InstrumentState? _);
        _listener.SetMeasurementEventCallback<long>(static (_, value, tags, state) => ((InstrumentState)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<int>(static (_, value, tags, state) => ((InstrumentState)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<double>(static (_, value, tags, state) => ((InstrumentState)state!).Record(value, tags));
        _listener.Start();
    }

    /// <summary>Every instrument of the meters now, observable ones observed now, in the Prometheus text format.</summary>
    public string Scrape()
    {
        lock (_scrape)
        {
            foreach (var state in _states.Values)
            {
                state.ClearObserved();
            }

            _listener.RecordObservableInstruments();
            var text = new StringBuilder(4096);
            foreach (var state in _states.Values.OrderBy(s => s.Name, StringComparer.Ordinal))
            {
                state.Write(text);
            }

            return text.ToString();
        }
    }

    public void Dispose() => _listener.Dispose();

    private enum Kind
    {
        Counter,
        Gauge,
        Histogram,
    }

    private sealed class InstrumentState
    {
        private readonly ConcurrentDictionary<TagKey, Series> _series = new();
        private readonly Kind _kind;
        private readonly bool _observed;
        private readonly double[] _bounds;
        private readonly string _help;

        public InstrumentState(Instrument instrument)
        {
            var type = instrument.GetType();
            var generic = type.IsGenericType ? type.GetGenericTypeDefinition() : type;
            _observed = instrument.IsObservable;
            _kind = generic == typeof(Counter<>) || generic == typeof(ObservableCounter<>) ? Kind.Counter
                : generic == typeof(Histogram<>) ? Kind.Histogram
                : Kind.Gauge;
            Name = _kind == Kind.Counter && !instrument.Name.EndsWith("_total", StringComparison.Ordinal) ? instrument.Name + "_total" : instrument.Name;
            _help = (instrument.Description ?? instrument.Name).Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
            _bounds = instrument switch
            {
                Histogram<double> h => [.. h.Advice?.HistogramBucketBoundaries ?? DefaultBounds],
                Histogram<long> h when h.Advice?.HistogramBucketBoundaries is { } b => [.. b.Select(x => (double)x)],
                _ => [],
            };
            if (_kind == Kind.Histogram && _bounds.Length == 0)
            {
                _bounds = [.. DefaultBounds];
            }
        }

        // Seconds, from a millisecond to a minute.
        private static readonly double[] DefaultBounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

        public string Name { get; }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var key = new TagKey(tags);
            if (!_series.TryGetValue(key, out var series))
            {
                series = _series.GetOrAdd(key, _ => new Series(_bounds.Length));
            }

            series.Record(_kind, _observed, _bounds, value);
        }

        /// <summary>Observable instruments report their series anew at every scrape: a series they stopped reporting goes.</summary>
        public void ClearObserved()
        {
            if (_observed)
            {
                _series.Clear();
            }
        }

        public void Write(StringBuilder text)
        {
            if (_series.IsEmpty)
            {
                return;
            }

            var type = _kind switch { Kind.Counter => "counter", Kind.Histogram => "histogram", _ => "gauge" };
            text.Append("# HELP ").Append(Name).Append(' ').Append(_help).Append('\n');
            text.Append("# TYPE ").Append(Name).Append(' ').Append(type).Append('\n');
            foreach (var (key, series) in _series.OrderBy(s => s.Key.ToString(), StringComparer.Ordinal))
            {
                series.Write(text, Name, key, _kind, _bounds);
            }
        }
    }

    private sealed class Series(int bounds)
    {
        private readonly long[] _buckets = new long[bounds];
        private double _value;
        private long _count;

        public void Record(Kind kind, bool observed, double[] bounds, double value)
        {
            lock (_buckets)
            {
                switch (kind)
                {
                    case Kind.Histogram:
                        _value += value;
                        _count++;
                        var i = Array.BinarySearch(bounds, value);
                        for (var b = i >= 0 ? i : ~i; b < bounds.Length; b++)
                        {
                            _buckets[b]++;
                        }

                        break;
                    case Kind.Counter when !observed:
                        _value += value;
                        break;
                    case Kind.Gauge when !observed:
                        _value += value;
                        break;
                    default:
                        _value = value;
                        break;
                }
            }
        }

        public void Write(StringBuilder text, string name, TagKey key, Kind kind, double[] bounds)
        {
            lock (_buckets)
            {
                if (kind != Kind.Histogram)
                {
                    Line(text, name, key, null, _value);
                    return;
                }

                for (var b = 0; b < bounds.Length; b++)
                {
                    Line(text, name + "_bucket", key, Format(bounds[b]), _buckets[b]);
                }

                Line(text, name + "_bucket", key, "+Inf", _count);
                Line(text, name + "_sum", key, null, _value);
                Line(text, name + "_count", key, null, _count);
            }
        }

        private static void Line(StringBuilder text, string name, TagKey key, string? le, double value)
        {
            text.Append(name);
            var labels = key.Labels();
            if (labels.Length > 0 || le is not null)
            {
                text.Append('{').Append(labels);
                if (le is not null)
                {
                    text.Append(labels.Length > 0 ? "," : "").Append("le=\"").Append(le).Append('"');
                }

                text.Append('}');
            }

            text.Append(' ').Append(Format(value)).Append('\n');
        }
    }

    internal static string Format(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN" : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Up to four tags, copied out of the measurement's span without allocating (values are boxed by the caller already).</summary>
    private readonly struct TagKey : IEquatable<TagKey>
    {
        private readonly KeyValuePair<string, object?> _a, _b, _c, _d;
        private readonly int _count;

        public TagKey(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            _count = Math.Min(tags.Length, 4);
            if (_count > 0) _a = tags[0];
            if (_count > 1) _b = tags[1];
            if (_count > 2) _c = tags[2];
            if (_count > 3) _d = tags[3];
        }

        private KeyValuePair<string, object?> At(int i) => i switch { 0 => _a, 1 => _b, 2 => _c, _ => _d };

        public bool Equals(TagKey other)
        {
            if (_count != other._count)
            {
                return false;
            }

            for (var i = 0; i < _count; i++)
            {
                var (x, y) = (At(i), other.At(i));
                if (!string.Equals(x.Key, y.Key, StringComparison.Ordinal) || !Equals(x.Value, y.Value))
                {
                    return false;
                }
            }

            return true;
        }

        public override bool Equals(object? obj) => obj is TagKey other && Equals(other);

        public override int GetHashCode()
        {
            var hash = new HashCode();
            for (var i = 0; i < _count; i++)
            {
                hash.Add(At(i).Key, StringComparer.Ordinal);
                hash.Add(At(i).Value);
            }

            return hash.ToHashCode();
        }

        public string Labels()
        {
            if (_count == 0)
            {
                return "";
            }

            var text = new StringBuilder();
            for (var i = 0; i < _count; i++)
            {
                var (k, v) = (At(i).Key, At(i).Value);
                var value = Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";
                text.Append(i > 0 ? "," : "").Append(k).Append("=\"")
                    .Append(value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal))
                    .Append('"');
            }

            return text.ToString();
        }

        public override string ToString() => Labels();
    }
}
