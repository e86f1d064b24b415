using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model;

/// <summary>Token ids 0-255 are the UTF-8 bytes of the text; two special ids follow them.</summary>
public sealed record ByteTokenizer(int BosTokenId, int EosTokenId)
{
    public const string FileName = "tokenizer.json";
    public const string Kind = "bytes";
    public const int ByteCount = 256;

    public static ByteTokenizer Default { get; } = new(ByteCount, ByteCount + 1);

    public int VocabSize => Math.Max(BosTokenId, EosTokenId) + 1;

    public int[] Encode(string text, bool addBos = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new List<int>(bytes.Length + 1);
        if (addBos)
        {
            ids.Add(BosTokenId);
        }

        ids.AddRange(bytes.Select(b => (int)b));
        return [.. ids];
    }

    public string Decode(IEnumerable<int> ids)
    {
        var bytes = ids.Where(i => i is >= 0 and < ByteCount && i != BosTokenId && i != EosTokenId).Select(i => (byte)i).ToArray();
        return Encoding.UTF8.GetString(bytes);
    }

    public JsonObject ToJson() => new()
    {
        ["dancemoe_tokenizer"] = Kind,
        ["vocab_size"] = VocabSize,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenId,
    };

    public void Save(string directory) =>
        File.WriteAllText(Path.Combine(directory, FileName), ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

    /// <summary>The special ids follow the byte ids and are tokens of the model, or the model could not embed what it is given.</summary>
    public static void CheckSpecialIds(int bosTokenId, int eosTokenId, int modelVocabSize, string source)
    {
        foreach (var (id, key) in new[] { (bosTokenId, "bos_token_id"), (eosTokenId, "eos_token_id") })
        {
            if (id < ByteCount || id >= modelVocabSize)
            {
                throw new ModelFormatException(modelVocabSize == int.MaxValue
                    ? $"{source}: byte tokenizer's {key} must follow the {ByteCount} byte ids (got {id})"
                    : $"{source}: byte tokenizer's {key} must be {ByteCount} to {modelVocabSize - 1}, after the byte ids and inside the model's vocab_size {modelVocabSize} (got {id})");
            }
        }
    }

    /// <summary>Null when the directory holds no tokenizer or another kind of tokenizer.</summary>
    public static ByteTokenizer? TryLoad(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!ModelFiles.RegularFileExists(path))
        {
            return null;
        }

        try
        {
            return FromJson(ModelFiles.ParseJson(ModelFiles.ReadJson(path)) as JsonObject, path);
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: invalid JSON ({ex.Message})", ex);
        }
    }

    public static ByteTokenizer? FromJson(JsonObject? root, string source)
    {
        if (root?["dancemoe_tokenizer"] is not JsonValue kind || !kind.TryGetValue<string>(out var name) || name != Kind)
        {
            return null;
        }

        if (root["bos_token_id"] is JsonValue b && b.TryGetValue<int>(out var bos)
            && root["eos_token_id"] is JsonValue e && e.TryGetValue<int>(out var eos))
        {
            CheckSpecialIds(bos, eos, int.MaxValue, source);
            return new ByteTokenizer(bos, eos);
        }

        throw new ModelFormatException($"{source}: byte tokenizer needs integer bos_token_id and eos_token_id");
    }
}
