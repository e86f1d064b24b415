#!/usr/bin/python3
"""Evaluates an exported checkpoint (config.json + fp16 model.safetensors) with the training program's forward.

    /usr/bin/python3 onnx/train/evaluate.py --model onnx/default

Reads the safetensors file back (so it also checks the export), computes held-out bits/byte per
domain over the whole sample and over its first --slice bytes (the slice the C# tests use), and
greedy samples per domain. Writes MODEL/evaluation.json.
"""

import argparse
import json
import os
import struct

import train as T
import torch

PROMPTS = {
    "en": "DESCRIPTION\n       The ",
    "de": "BESCHREIBUNG\n       Die ",
    "fr": "DESCRIPTION\n       La ",
    "python": "import os\n\n\ndef ",
}


def read_safetensors(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F16", f"{name}: {info['dtype']}"
        start, end = info["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float16).float().view(info["shape"])
    return tensors


def load(directory):
    with open(os.path.join(directory, "config.json")) as f:
        hf = json.load(f)

    class Args:
        hidden = hf["hidden_size"]
        ffn = hf["intermediate_size"]
        layers = hf["num_hidden_layers"]
        heads = hf["num_attention_heads"]
        kv_heads = hf["num_key_value_heads"]
        experts = hf["num_local_experts"]
        top_k = hf["num_experts_per_tok"]
        context = hf["max_position_embeddings"]
        rope_theta = hf["rope_theta"]

    model = T.Model(T.Config(Args))
    tensors = read_safetensors(os.path.join(directory, "model.safetensors"))
    expected = dict(T.hf_tensors(model))
    assert set(tensors) == set(expected), set(tensors) ^ set(expected)
    with torch.no_grad():
        for name, target in expected.items():
            assert tuple(tensors[name].shape) == tuple(target.shape), name
            target.copy_(tensors[name])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--slice", type=int, default=512, help="bytes per domain for the C# tests")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample-bytes", type=int, default=160)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)
    folder = os.path.join(args.model, "heldout")
    heldout = {os.path.splitext(n)[0]: T.read_corpus(os.path.join(folder, n)) for n in sorted(os.listdir(folder))}
    full, counts = T.evaluate(model, heldout, model.c.context)
    sliced, _ = T.evaluate(model, heldout, model.c.context, max_bytes=args.slice)
    result = {
        "heldout_bytes": {d: len(x) for d, x in heldout.items()},
        "bits_per_byte": full,
        "bits_per_byte_mean": sum(full.values()) / len(full),
        "slice_bytes": args.slice,
        "slice_bits_per_byte": sliced,
        "local_share_own_top_30": T.local_share(counts, 0.3),
        "samples": {d: p + "|" + T.greedy(model, p, args.sample_bytes)[len(p.encode()):] for d, p in PROMPTS.items()},
    }
    print(json.dumps(result, indent=1, ensure_ascii=False))
    with open(os.path.join(args.model, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
