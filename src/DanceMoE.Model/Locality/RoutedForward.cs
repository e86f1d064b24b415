using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Locality;

/// <summary>Logits [tokens, vocab] of one window and, per layer, the experts each token chose ([tokens, top-k]).</summary>
public sealed record RoutedWindow(float[] Logits, IReadOnlyList<int[]> Experts);

/// <summary>
/// A whole-window forward (no cache carried between windows) of a Mixtral-layout checkpoint that reports every
/// router choice: the <see cref="ReferenceModel"/> with its routing hook.
/// </summary>
public sealed class RoutedForward(MoeWeights weights)
{
    private readonly ReferenceModel _reference = new(weights);

    public MoeConfig Config => _reference.Config;

    public RoutedWindow Run(ReadOnlySpan<int> tokens)
    {
        var c = Config;
        var s = tokens.Length;
        if (s == 0 || s > c.MaxPositions)
        {
            throw new ArgumentException($"window of {s} tokens (1 to max_position_embeddings {c.MaxPositions})", nameof(tokens));
        }

        var experts = Enumerable.Range(0, c.RoutedLayers).Select(_ => new int[s * c.TopK]).ToArray();
        var logits = _reference.Forward(tokens, _reference.NewCache(), (layer, position, choices) =>
        {
            for (var j = 0; j < choices.Length; j++)
            {
                experts[layer][(position * c.TopK) + j] = choices[j].Expert;
            }
        });
        return new RoutedWindow(logits, experts);
    }
}
