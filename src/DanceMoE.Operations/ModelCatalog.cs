using System.Security.Cryptography;
using System.Text;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;

namespace DanceMoE.Operations;

/// <summary>
/// Finds the model a command runs: an exported directory (manifest.json) as is, or a checkpoint
/// (config.json) exported once into the state folder. The default is <c>onnx/default</c> when it is
/// there, else a tiny seeded checkpoint made on first use.
/// </summary>
public static class ModelCatalog
{
    /// <summary>How the exports made here store their routed experts; part of the fingerprint of an export's folder.</summary>
    private const ExpertWeightFormat ExpertWeights = ExpertWeightFormat.Fp32;

    public static string DefaultCheckpoint
    {
        get
        {
            var trained = Path.Combine(LocalEnvironment.RepositoryRoot, "onnx", "default");
            return File.Exists(Path.Combine(trained, Checkpoint.ConfigFile)) ? trained : TinyDefault();
        }
    }

    /// <summary>Returns an exported model directory for <paramref name="directory"/> (null: the default model).</summary>
    public static string ResolveExported(string? directory, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(log);
        directory ??= DefaultCheckpoint;
        if (File.Exists(Path.Combine(directory, ModelManifest.FileName)))
        {
            return directory;
        }

        if (!File.Exists(Path.Combine(directory, Checkpoint.ConfigFile)))
        {
            throw new OperationException($"{directory}: neither an exported model (manifest.json) nor a checkpoint (config.json)");
        }

        var target = Path.Combine(LocalEnvironment.StateDirectory, "models", $"{Path.GetFileName(Path.GetFullPath(directory).TrimEnd('/'))}-{Fingerprint(directory)}");
        if (File.Exists(Path.Combine(target, ModelManifest.FileName)))
        {
            return target;
        }

        log($"exporting {directory} to {target}");
        var staging = target + ".partial-" + Environment.ProcessId;
        try
        {
            OnnxExporter.Export(Checkpoint.Open(directory), staging, TensorDtype.F32, expertWeights: ExpertWeights);
            if (!Directory.Exists(target))
            {
                Directory.Move(staging, target);
            }
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException(ex.Message, OperationFailure.Failed, ex);
        }
        finally
        {
            if (Directory.Exists(staging))
            {
                Directory.Delete(staging, recursive: true);
            }
        }

        return target;
    }

    private static string TinyDefault()
    {
        var directory = Path.Combine(LocalEnvironment.StateDirectory, "models", "tiny-seed1");
        if (!File.Exists(Path.Combine(directory, Checkpoint.ConfigFile)))
        {
            TinyCheckpoint.Write(directory, new TinyOptions { Seed = 1 });
        }

        return directory;
    }

    /// <summary>A short hash of the checkpoint's file names, sizes and config, so a changed checkpoint is exported again.</summary>
    private static string Fingerprint(string directory)
    {
        var text = new StringBuilder();
        foreach (var file in Directory.GetFiles(directory).Order(StringComparer.Ordinal))
        {
            var info = new FileInfo(file);
            text.Append(info.Name).Append(':').Append(info.Length).Append(';');
        }

        try
        {
            text.Append(ModelFiles.ReadJson(Path.Combine(directory, Checkpoint.ConfigFile)));
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException(ex.Message, OperationFailure.Failed, ex);
        }

        text.Append(ModelManifest.CurrentFormat).Append(";experts=").Append(ExpertWeights.Name()).Append(";dense=steps");
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..12];
    }
}
