using System.Globalization;
using System.Text;

namespace DanceMoE.Placement;

/// <summary>
/// Reads routing traces: one file per (domain, layer); each line is one sequence,
/// "ids&lt;TAB&gt;&lt;TAB&gt;weights" (each list tab-separated), k ids per token.
/// </summary>
public static class TraceReader
{
    /// <summary>
    /// The longest line read, in characters: 50 times the longest of the DeepSeek-V2-Lite traces (82,306), about 16 MB
    /// of memory; a file of one endless line (/dev/zero) would otherwise be read until the process runs out of memory.
    /// </summary>
    public const int MaxLineChars = 4 << 20;

    /// <summary>
    /// The most characters a layer file may hold: 200 times the largest DeepSeek-V2-Lite one (315 KB). Its ids are kept in
    /// memory, so a file of gigabytes would otherwise be read until the process ran out of it.
    /// </summary>
    public const int MaxFileChars = 64 << 20;

    /// <summary>
    /// Returns the expert ids of each line (sequence) of one layer file's bytes, UTF-8 text (a UTF-8 byte order mark is
    /// skipped). A UTF-16 or UTF-32 byte order mark is refused: the reader would otherwise decode by it without a word.
    /// </summary>
    public static IReadOnlyList<int[]> ReadLayer(Stream stream, int topK, int experts)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: true, leaveOpen: true);
        if (reader.Peek() >= 0 && reader.CurrentEncoding is not UTF8Encoding)
        {
            var encoding = reader.CurrentEncoding;
            throw new FormatException(
                $"starts with a {(encoding is UTF32Encoding ? "UTF-32" : "UTF-16")} {(encoding.GetPreamble()[0] == 0xFF ? "little" : "big")}-endian byte order mark: trace files are UTF-8 text");
        }

        return ReadLayer(reader, topK, experts);
    }

    /// <summary>Returns the expert ids of each line (sequence) of one layer file.</summary>
    public static IReadOnlyList<int[]> ReadLayer(TextReader reader, int topK, int experts)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var sequences = new List<int[]>();
        var lineNumber = 0;
        var lines = new LineReader(reader);
        while (lines.Next(lineNumber + 1) is { } line)
        {
            lineNumber++;
            if (line.Length == 0)
            {
                continue;
            }

            var split = line.IndexOf("\t\t", StringComparison.Ordinal);
            var idsPart = split < 0 ? line : line[..split];
            var ids = new List<int>();
            foreach (var range in idsPart.AsSpan().SplitAny(" \t"))
            {
                var token = idsPart.AsSpan()[range];
                if (token.IsEmpty)
                {
                    continue;
                }

                // int.TryParse skips trailing NULs, which only a damaged file holds.
                if (!int.TryParse(token, NumberStyles.None, CultureInfo.InvariantCulture, out var id) || id >= experts || token[^1] == '\0')
                {
                    throw new FormatException($"line {lineNumber}: {Quote(token)} is not an expert id below {experts}");
                }

                ids.Add(id);
            }

            if (ids.Count == 0 || ids.Count % topK != 0)
            {
                throw new FormatException($"line {lineNumber}: {ids.Count} ids is not a positive multiple of top-{topK}");
            }

            // A token's top-k are k different experts: one listed twice would count its activation twice.
            for (var start = 0; start < ids.Count; start += topK)
            {
                for (var i = start + 1; i < start + topK; i++)
                {
                    for (var j = start; j < i; j++)
                    {
                        if (ids[i] == ids[j])
                        {
                            throw new FormatException($"line {lineNumber}: token {(start / topK) + 1} lists expert {ids[i]} twice among its top-{topK}");
                        }
                    }
                }
            }

            sequences.Add([.. ids]);
        }

        return sequences;
    }

    /// <summary>
    /// Lines read a block at a time: each ends at \n, \r\n or \r; at most <see cref="MaxLineChars"/> long. Reading one
    /// character at a time cost about 8 % of reading the DeepSeek-V2-Lite traces.
    /// </summary>
    private sealed class LineReader(TextReader reader)
    {
        private readonly char[] _block = new char[64 * 1024];
        private readonly StringBuilder _line = new();
        private int _start;
        private int _end;
        private long _read;
        private bool _afterCarriageReturn;

        /// <summary>The next line without its end, or null at the end.</summary>
        public string? Next(int lineNumber)
        {
            _line.Clear();
            var any = false;
            while (true)
            {
                if (_start == _end)
                {
                    _start = 0;
                    _end = reader.Read(_block);
                    if (_end <= 0)
                    {
                        _end = 0;
                        return any ? _line.ToString() : null;
                    }

                    _read += _end;
                    if (_read > MaxFileChars)
                    {
                        throw new FormatException(string.Create(CultureInfo.InvariantCulture, $"longer than {MaxFileChars:N0} characters, the most a trace file may hold"));
                    }
                }

                // A \r that ended the last line, with its \n in this block.
                if (_afterCarriageReturn)
                {
                    _afterCarriageReturn = false;
                    if (_block[_start] == '\n')
                    {
                        _start++;
                        continue;
                    }
                }

                any = true;
                var rest = _block.AsSpan(_start, _end - _start);
                var stop = rest.IndexOfAny('\n', '\r');
                var part = stop < 0 ? rest : rest[..stop];
                if (_line.Length + part.Length > MaxLineChars)
                {
                    throw new FormatException(string.Create(CultureInfo.InvariantCulture, $"line {lineNumber} is longer than {MaxLineChars:N0} characters"));
                }

                _line.Append(part);
                if (stop < 0)
                {
                    _start = _end;
                    continue;
                }

                _afterCarriageReturn = rest[stop] == '\r';
                _start += stop + 1;
                return _line.ToString();
            }
        }
    }

    /// <summary>
    /// The token quoted for an error line: its first characters, control, format (bidi) and undecodable ones escaped, as a
    /// damaged or binary file holds them; a backslash too, so that a file's own "\u0000" reads apart from a NUL.
    /// </summary>
    private static string Quote(ReadOnlySpan<char> token)
    {
        const int MaxQuoted = 32;
        var quoted = new StringBuilder("'");
        foreach (var c in token[..Math.Min(token.Length, MaxQuoted)])
        {
            if (char.IsControl(c) || char.IsSurrogate(c) || c is '\uFFFD' or '\\' || char.GetUnicodeCategory(c) == UnicodeCategory.Format)
            {
                quoted.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
            }
            else
            {
                quoted.Append(c);
            }
        }

        return quoted.Append(token.Length > MaxQuoted ? "'..." : "'").ToString();
    }

    /// <summary>Joins the per-layer files of one domain into requests (line i of every layer is request i).</summary>
    public static IReadOnlyList<TraceRequest> Join(int server, IReadOnlyList<IReadOnlyList<int[]>> layers, int topK)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0)
        {
            return [];
        }

        var count = layers[0].Count;
        for (var l = 1; l < layers.Count; l++)
        {
            if (layers[l].Count != count)
            {
                throw new FormatException($"layer {l + 1} has {layers[l].Count} sequences, layer 1 has {count}");
            }
        }

        var requests = new List<TraceRequest>(count);
        for (var i = 0; i < count; i++)
        {
            var tokens = layers[0][i].Length / topK;
            var experts = new int[layers.Count][];
            for (var l = 0; l < layers.Count; l++)
            {
                if (layers[l][i].Length != tokens * topK)
                {
                    throw new FormatException($"sequence {i + 1}: layer {l + 1} has {layers[l][i].Length / topK} tokens, layer 1 has {tokens}");
                }

                experts[l] = layers[l][i];
            }

            requests.Add(new TraceRequest(server, tokens, experts));
        }

        return requests;
    }
}
