namespace DanceMoE.Model.Locality;

/// <summary>One domain's held-out text run through the model: its bits per byte and how often each expert was chosen.</summary>
public sealed record DomainTrace(string Domain, long Bytes, double BitsPerByte, IReadOnlyList<long[]> ExpertCounts);

/// <summary>
/// Reads the held-out samples of a model directory (<c>heldout/{domain}.txt</c>) and traces them in windows of
/// <c>max_position_embeddings</c> bytes, each run from the BOS token alone: the evaluation the training program does.
/// </summary>
public static class HeldOutTrace
{
    public const string Folder = "heldout";

    /// <summary>The domains with a sample, in ordinal order of their names.</summary>
    public static IReadOnlyList<string> Domains(string modelDirectory)
    {
        var folder = Path.Combine(modelDirectory, Folder);
        if (!Directory.Exists(folder))
        {
            throw new ModelFormatException($"{modelDirectory}: no {Folder}/ folder of held-out samples");
        }

        var domains = Directory.GetFiles(folder, "*.txt").Select(f => Path.GetFileNameWithoutExtension(f)).Order(StringComparer.Ordinal).ToList();
        return domains.Count > 0 ? domains : throw new ModelFormatException($"{folder}: no *.txt held-out samples");
    }

    /// <summary>The most of a sample read when no smaller <c>maxBytes</c> is asked for.</summary>
    public const int MaxSampleBytes = 64 << 20;

    /// <summary>The first <paramref name="maxBytes"/> bytes (0: all, up to <see cref="MaxSampleBytes"/>) of a domain's sample; never empty.</summary>
    public static byte[] Sample(string modelDirectory, string domain, int maxBytes)
    {
        var path = Path.Combine(modelDirectory, Folder, domain + ".txt");
        var limit = maxBytes is > 0 and < MaxSampleBytes ? maxBytes : MaxSampleBytes;
        if (!ModelFiles.RegularFileExists(path))
        {
            throw new ModelFormatException($"{path}: no held-out sample for domain '{domain}'");
        }

        byte[] bytes;
        try
        {
            using var file = File.OpenRead(path);
            bytes = ModelFiles.ReadAtMost(file, limit);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException($"{path}: cannot read the held-out sample: {ex.Message}", ex);
        }

        if (bytes.Length == 0)
        {
            throw new ModelFormatException($"{path}: the held-out sample is empty");
        }

        if (bytes.Length > limit && maxBytes <= 0)
        {
            throw new ModelFormatException($"{path}: the held-out sample is larger than {MaxSampleBytes >> 20} MiB; ask for fewer bytes (model eval --max-bytes)");
        }

        return bytes.Length > limit ? bytes[..limit] : bytes;
    }

    public static DomainTrace Trace(RoutedForward model, ByteTokenizer tokenizer, string domain, ReadOnlySpan<byte> text)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var c = model.Config;
        if (tokenizer.BosTokenId >= c.VocabSize)
        {
            throw new ModelFormatException($"the tokenizer's BOS id {tokenizer.BosTokenId} is outside the vocabulary of {c.VocabSize}");
        }

        var counts = Enumerable.Range(0, c.RoutedLayers).Select(_ => new long[c.NumExperts]).ToList();
        var window = c.MaxPositions;
        var bits = 0.0;
        var tokens = new int[window];
        for (var start = 0; start < text.Length; start += window)
        {
            var n = Math.Min(window, text.Length - start);
            tokens[0] = tokenizer.BosTokenId;
            for (var i = 1; i < n; i++)
            {
                tokens[i] = text[start + i - 1];
            }

            var result = model.Run(tokens.AsSpan(0, n));
            for (var i = 0; i < n; i++)
            {
                bits -= LogSoftmax(result.Logits.AsSpan(i * c.VocabSize, c.VocabSize), text[start + i]) / Math.Log(2);
            }

            for (var l = 0; l < c.RoutedLayers; l++)
            {
                foreach (var e in result.Experts[l])
                {
                    counts[l][e]++;
                }
            }
        }

        return new DomainTrace(domain, text.Length, text.Length == 0 ? 0 : bits / text.Length, counts);
    }

    /// <summary>log p(<paramref name="target"/>) under the softmax of <paramref name="logits"/>, in nats.</summary>
    public static double LogSoftmax(ReadOnlySpan<float> logits, int target)
    {
        var max = double.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }

        var sum = 0.0;
        foreach (var l in logits)
        {
            sum += Math.Exp(l - max);
        }

        return logits[target] - max - Math.Log(sum);
    }
}
