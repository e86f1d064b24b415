using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using DanceMoE.Placement;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// A small dependency-free PNG bar chart of the simulation: mean request latency (with p99 as a tick) and the local
/// activation ratio per algorithm. Text uses a built-in 5x7 pixel font.
/// </summary>
internal static class PlacementPlot
{
    private const int Width = 960;
    private const int Height = 560;
    private const int Scale = 2;

    private static readonly Dictionary<char, long> Font = new()
    {
        ['a'] = 0x000E0BE2F,
        ['b'] = 0x421E8C63E,
        ['c'] = 0x000E8422E,
        ['d'] = 0x042F8C62F,
        ['e'] = 0x000E8FE0E,
        ['f'] = 0x1928E2108,
        ['g'] = 0x01F18BC2E,
        ['h'] = 0x4216CC631,
        ['i'] = 0x100C2108E,
        ['j'] = 0x080610A4C,
        ['k'] = 0x4212A6292,
        ['l'] = 0x30842108E,
        ['m'] = 0x001AAD631,
        ['n'] = 0x0016CC631,
        ['o'] = 0x000E8C62E,
        ['p'] = 0x001E8FA10,
        ['q'] = 0x000F8BC21,
        ['r'] = 0x0016CC210,
        ['s'] = 0x000F8383E,
        ['t'] = 0x211C42126,
        ['u'] = 0x00118C66D,
        ['v'] = 0x00118C544,
        ['w'] = 0x00118D6AA,
        ['x'] = 0x001151151,
        ['y'] = 0x00118BC2E,
        ['z'] = 0x001F1111F,
        ['0'] = 0x3A33AE62E,
        ['1'] = 0x11842108E,
        ['2'] = 0x3A211111F,
        ['3'] = 0x7C441062E,
        ['4'] = 0x08CA97C42,
        ['5'] = 0x7E1E0862E,
        ['6'] = 0x1910F462E,
        ['7'] = 0x7C2222108,
        ['8'] = 0x3A317462E,
        ['9'] = 0x3A317844C,
        ['.'] = 0x00000018C,
        [','] = 0x000003088,
        ['%'] = 0x632222263,
        ['-'] = 0x0000F8000,
        ['/'] = 0x002222200,
        [':'] = 0x018C03180,
        ['('] = 0x088842082,
        [')'] = 0x208210888,
        ['='] = 0x001F07C00,
        ['+'] = 0x0084F9080,
        ['_'] = 0x00000001F,
    };

    private static readonly (byte R, byte G, byte B)[] Palette =
    [
        (140, 140, 140), (120, 160, 200), (90, 130, 190), (230, 150, 60), (200, 90, 70), (60, 160, 90),
    ];

    public static byte[] Render(string title, IReadOnlyList<AlgorithmResult> results)
    {
        var pixels = new byte[Width * Height * 3];
        Array.Fill(pixels, (byte)255);
        Text(pixels, 20, 12, title, (0, 0, 0));
        var maxLatency = results.Max(r => Math.Max(r.Metrics.LatencyMsMean, r.Metrics.LatencyMsP99));
        Panel(pixels, 20, 50, (Width / 2) - 30, Height - 70, "mean latency ms (tick: p99)", results,
            r => r.Metrics.LatencyMsMean / maxLatency, r => r.Metrics.LatencyMsP99 / maxLatency, r => r.Metrics.LatencyMsMean.ToString("F0", CultureInfo.InvariantCulture));
        Panel(pixels, (Width / 2) + 10, 50, (Width / 2) - 30, Height - 70, "local activation ratio", results,
            r => r.Metrics.LocalRatio, _ => double.NaN, r => r.Metrics.LocalRatio.ToString("F3", CultureInfo.InvariantCulture));
        return Png(pixels);
    }

    private static void Panel(
        byte[] pixels, int x, int y, int width, int height, string label, IReadOnlyList<AlgorithmResult> results,
        Func<AlgorithmResult, double> value, Func<AlgorithmResult, double> tick, Func<AlgorithmResult, string> caption)
    {
        Text(pixels, x, y, label, (40, 40, 40));
        var top = y + 40;
        var bottom = y + height - 40;
        Rect(pixels, x, bottom, width, 2, (0, 0, 0));
        var slot = width / Math.Max(1, results.Count);
        for (var i = 0; i < results.Count; i++)
        {
            var r = results[i];
            var barHeight = (int)Math.Round(Math.Clamp(value(r), 0, 1) * (bottom - top));
            var left = x + (i * slot) + (slot / 6);
            var barWidth = slot * 2 / 3;
            Rect(pixels, left, bottom - barHeight, barWidth, barHeight, Palette[i % Palette.Length]);
            var t = tick(r);
            if (!double.IsNaN(t))
            {
                Rect(pixels, left, bottom - (int)Math.Round(Math.Clamp(t, 0, 1) * (bottom - top)), barWidth, 2, (0, 0, 0));
            }

            Text(pixels, left, bottom - barHeight - 18, caption(r), (0, 0, 0), 1);
            Text(pixels, left, bottom + 8, r.Algorithm, (0, 0, 0), 1);
        }
    }

    private static void Rect(byte[] pixels, int x, int y, int width, int height, (byte R, byte G, byte B) color)
    {
        for (var row = Math.Max(0, y); row < Math.Min(Height, y + height); row++)
        {
            for (var col = Math.Max(0, x); col < Math.Min(Width, x + width); col++)
            {
                var i = ((row * Width) + col) * 3;
                pixels[i] = color.R;
                pixels[i + 1] = color.G;
                pixels[i + 2] = color.B;
            }
        }
    }

    private static void Text(byte[] pixels, int x, int y, string text, (byte R, byte G, byte B) color, int scale = Scale)
    {
        foreach (var ch in text.ToLowerInvariant())
        {
            if (Font.TryGetValue(ch, out var glyph))
            {
                for (var row = 0; row < 7; row++)
                {
                    for (var col = 0; col < 5; col++)
                    {
                        if (((glyph >> (34 - ((row * 5) + col))) & 1) != 0)
                        {
                            Rect(pixels, x + (col * scale), y + (row * scale), scale, scale, color);
                        }
                    }
                }
            }

            x += 6 * scale;
        }
    }

    private static byte[] Png(byte[] rgb)
    {
        using var raw = new MemoryStream();
        using (var zlib = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
        {
            for (var row = 0; row < Height; row++)
            {
                zlib.WriteByte(0);
                zlib.Write(rgb, row * Width * 3, Width * 3);
            }
        }

        using var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, Width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), Height);
        header[8] = 8;
        header[9] = 2;
        Chunk(png, "IHDR", header);
        Chunk(png, "IDAT", raw.ToArray());
        Chunk(png, "IEND", []);
        return png.ToArray();
    }

    private static void Chunk(Stream stream, string type, byte[] data)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(word, data.Length);
        stream.Write(word);
        var typeBytes = type.Select(c => (byte)c).ToArray();
        stream.Write(typeBytes);
        stream.Write(data);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32([.. typeBytes, .. data]));
        stream.Write(word);
    }

    private static uint Crc32(byte[] bytes)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in bytes)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
            }
        }

        return ~crc;
    }
}
