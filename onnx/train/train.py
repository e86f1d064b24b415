#!/usr/bin/python3
"""Trains the default DanceMoE model: a byte-level Mixtral-layout MoE over four text domains.

    nice -n 10 /usr/bin/python3 onnx/train/train.py --corpus /tmp/dancemoe-corpus --out onnx/default

Writes a Hugging Face Mixtral checkpoint (config.json, model.safetensors in fp16, tokenizer.json)
plus heldout/{domain}.txt and training_log.json. Deterministic given --seed and --threads.

The training loss adds, per layer, a domain-expert mutual-information term: it rewards routers
whose expert distribution differs between domains. The domain label is used by the loss only;
the exported model is a plain Mixtral forward whose router sees the hidden state alone.
"""

import argparse
import json
import math
import os
import struct
import time

# Busy-waiting OpenMP threads collapse (10x slower) when other processes share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F

DOMAINS = ("en", "de", "fr", "python")
BOS, EOS, VOCAB = 256, 257, 258


class Config:
    def __init__(self, args):
        self.vocab = VOCAB
        self.hidden = args.hidden
        self.ffn = args.ffn
        self.layers = args.layers
        self.heads = args.heads
        self.kv_heads = args.kv_heads
        self.head_dim = args.hidden // args.heads
        self.experts = args.experts
        self.top_k = args.top_k
        self.context = args.context
        self.rope_theta = args.rope_theta
        self.eps = 1e-5

    def hf(self):
        return {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "num_local_experts": self.experts,
            "num_experts_per_tok": self.top_k,
            "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context,
            "tie_word_embeddings": False,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "torch_dtype": "float16",
            "hidden_act": "silu",
        }


class RmsNorm(torch.nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(c):
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim))
    angles = torch.arange(c.context, dtype=torch.float64)[:, None] * inv.float().double()[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = torch.nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k_proj = torch.nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.v_proj = torch.nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.o_proj = torch.nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        c = self.c
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos[:t] + rotate_half(q) * sin[:t]
        k = k * cos[:t] + rotate_half(k) * sin[:t]
        group = c.heads // c.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim) + mask[:t, :t]
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, c.heads * c.head_dim))


class Moe(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.gate = torch.nn.Linear(c.hidden, c.experts, bias=False)
        self.w1 = torch.nn.Parameter(torch.empty(c.experts, c.ffn, c.hidden))
        self.w3 = torch.nn.Parameter(torch.empty(c.experts, c.ffn, c.hidden))
        self.w2 = torch.nn.Parameter(torch.empty(c.experts, c.hidden, c.ffn))

    def forward(self, x):
        c = self.c
        shape = x.shape
        x = x.reshape(-1, c.hidden)
        probs = self.gate(x).softmax(-1)
        weights, chosen = probs.topk(c.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        flat = chosen.reshape(-1)
        order = torch.argsort(flat, stable=True)
        rows = order // c.top_k
        counts = torch.bincount(flat, minlength=c.experts).tolist()
        inputs = x[rows].split(counts)
        outputs = []
        for e, xe in enumerate(inputs):
            if xe.shape[0] == 0:
                continue
            outputs.append((F.silu(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())) @ self.w2[e].t())
        y = torch.cat(outputs) * weights.reshape(-1)[order, None]
        out = torch.zeros_like(x).index_add_(0, rows, y)
        return out.view(shape), probs, chosen


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RmsNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RmsNorm(c.hidden, c.eps)
        self.block_sparse_moe = Moe(c)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        y, probs, chosen = self.block_sparse_moe(self.post_attention_layernorm(h))
        return h + y, probs, chosen


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = torch.nn.Embedding(c.vocab, c.hidden)
        self.layers = torch.nn.ModuleList([Layer(c) for _ in range(c.layers)])
        self.norm = RmsNorm(c.hidden, c.eps)
        self.lm_head = torch.nn.Linear(c.hidden, c.vocab, bias=False)
        cos, sin = rope_tables(c)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("mask", torch.full((c.context, c.context), float("-inf")).triu(1), persistent=False)

    def init_weights(self, generator):
        c = self.c
        std = 0.02
        residual_std = std / math.sqrt(2 * c.layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue
            scale = residual_std if name.endswith("o_proj.weight") or name.endswith(".w2") else std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * scale)

    def forward(self, tokens):
        h = self.embed_tokens(tokens)
        routing = []
        for layer in self.layers:
            h, probs, chosen = layer(h, self.cos, self.sin, self.mask)
            routing.append((probs, chosen))
        return self.lm_head(self.norm(h)), routing


def entropy(p):
    return -(p * (p + 1e-9).log()).sum(-1)


def domain_mutual_information(probs, domain_of_row, domains):
    """I(domain; expert) under the router's probabilities, domains weighted equally (balanced batches)."""
    per_domain = torch.stack([probs[domain_of_row == d].mean(0) for d in range(domains)])
    return entropy(per_domain.mean(0)) - entropy(per_domain).mean()


def load_balance(probs, chosen, experts):
    """Switch-style auxiliary loss: E * sum_e (share of routed slots) * (mean router probability)."""
    share = torch.bincount(chosen.reshape(-1), minlength=experts).float() / chosen.numel()
    return experts * (share * probs.mean(0)).sum()


def read_corpus(path):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).long()


def batch(corpora, per_domain, context, generator):
    rows, labels = [], []
    for d, data in enumerate(corpora):
        starts = torch.randint(0, len(data) - context, (per_domain,), generator=generator)
        for s in starts.tolist():
            rows.append(data[s:s + context])
            labels.append(d)
    targets = torch.stack(rows)
    inputs = torch.cat([torch.full((targets.shape[0], 1), BOS), targets[:, :-1]], dim=1)
    return inputs, targets, torch.tensor(labels)


def heldout_windows(data, context):
    """Consecutive windows of `context` bytes, each run from BOS alone (the C# evaluation does the same)."""
    for s in range(0, len(data), context):
        targets = data[s:s + context]
        yield torch.cat([torch.tensor([BOS]), targets[:-1]])[None], targets[None]


@torch.no_grad()
def evaluate(model, heldout, context, max_bytes=None):
    model.eval()
    result = {}
    counts = {}
    for name, data in heldout.items():
        data = data if max_bytes is None else data[:max_bytes]
        nats = 0.0
        used = torch.zeros(model.c.layers, model.c.experts)
        for inputs, targets in heldout_windows(data, context):
            logits, routing = model(inputs)
            nats += F.cross_entropy(logits[0], targets[0], reduction="sum").item()
            for l, (_, chosen) in enumerate(routing):
                used[l] += torch.bincount(chosen.reshape(-1), minlength=model.c.experts).float()
        result[name] = nats / len(data) / math.log(2)
        counts[name] = used
    model.train()
    return result, counts


def local_share(counts, fraction):
    """Each domain's server holds its own most used experts per layer: share of its activations that stay local."""
    slots = round(fraction * next(iter(counts.values())).shape[1])
    local = total = 0.0
    for used in counts.values():
        top = used.sort(dim=1, descending=True).values[:, :slots]
        local += top.sum().item()
        total += used.sum().item()
    return local / total


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors:
        data = t.detach().to(torch.float16).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def hf_tensors(model):
    c = model.c
    yield "model.embed_tokens.weight", model.embed_tokens.weight
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", layer.input_layernorm.weight
        for proj in "qkvo":
            yield p + f"self_attn.{proj}_proj.weight", getattr(layer.self_attn, f"{proj}_proj").weight
        yield p + "post_attention_layernorm.weight", layer.post_attention_layernorm.weight
        moe = layer.block_sparse_moe
        yield p + "block_sparse_moe.gate.weight", moe.gate.weight
        for e in range(c.experts):
            for w in ("w1", "w2", "w3"):
                yield p + f"block_sparse_moe.experts.{e}.{w}.weight", getattr(moe, w)[e]
    yield "model.norm.weight", model.norm.weight
    yield "lm_head.weight", model.lm_head.weight


@torch.no_grad()
def greedy(model, prompt, count):
    model.eval()
    tokens = [BOS] + list(prompt.encode("utf-8"))
    for _ in range(count):
        logits, _ = model(torch.tensor([tokens[-model.c.context:]]))
        tokens.append(int(logits[0, -1, :256].argmax()))
    model.train()
    return bytes(tokens[1:]).decode("utf-8", errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", help="checkpoint directory to continue from (default: random initialisation)")
    parser.add_argument("--steps", type=int, default=3400)
    parser.add_argument("--per-domain", type=int, default=2, help="sequences per domain in a batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--mi-weight", type=float, default=0.1, help="per layer; 0 trains plainly")
    parser.add_argument("--balance-weight", type=float, default=0.01, help="per layer")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--rope-theta", type=float, default=1e6, help="Mixtral's value")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c = Config(args)
    corpora = [read_corpus(os.path.join(args.corpus, f"{d}.train.txt")) for d in DOMAINS]
    heldout = {d: read_corpus(os.path.join(args.corpus, f"{d}.heldout.txt")) for d in DOMAINS}
    model = Model(c)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    if args.init:
        # Continue from a written checkpoint (fp16 weights, fresh optimizer and schedule).
        from evaluate import load
        model.load_state_dict(load(args.init).state_dict())
    params = sum(p.numel() for p in model.parameters())
    print(f"{params} parameters; corpus bytes {[len(x) for x in corpora]}", flush=True)

    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() == 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    sampler = torch.Generator().manual_seed(args.seed + 1)
    log = {"args": vars(args), "parameters": params, "evals": []}
    start = time.time()
    tokens_seen = 0
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets, labels = batch(corpora, args.per_domain, c.context, sampler)
        logits, routing = model(inputs)
        lm = F.cross_entropy(logits.reshape(-1, c.vocab), targets.reshape(-1))
        domain_of_row = labels[:, None].expand(-1, c.context).reshape(-1)
        mi = sum(domain_mutual_information(p, domain_of_row, len(DOMAINS)) for p, _ in routing)
        balance = sum(load_balance(p, ch, c.experts) for p, ch in routing)
        loss = lm - args.mi_weight * mi + args.balance_weight * balance
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens_seen += targets.numel()
        if step % 50 == 0:
            elapsed = time.time() - start
            print(f"step {step} lm {lm.item() / math.log(2):.3f} bits/byte, mi {mi.item() / c.layers:.3f} nats/layer,"
                  f" balance {balance.item() / c.layers:.3f}, {tokens_seen / elapsed:.0f} tokens/s, {elapsed:.0f} s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            bits, counts = evaluate(model, heldout, c.context, max_bytes=8192)
            entry = {"step": step, "seconds": round(time.time() - start), "bits_per_byte_8k": bits,
                     "local_share_30": local_share(counts, 0.3), "local_share_50": local_share(counts, 0.5)}
            log["evals"].append(entry)
            print(json.dumps(entry), flush=True)

    log["train_seconds"] = round(time.time() - start)
    log["tokens"] = tokens_seen
    os.makedirs(os.path.join(args.out, "heldout"), exist_ok=True)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    bits, counts = evaluate(model, heldout, c.context)
    log["heldout_bits_per_byte_fp16"] = bits
    log["heldout_bits_per_byte_mean"] = sum(bits.values()) / len(bits)
    log["local_share_own_top_30"] = local_share(counts, 0.3)
    log["local_share_own_top_50"] = local_share(counts, 0.5)
    prompts = {"en": "The command ", "de": "Die Option ", "fr": "La commande ", "python": "def "}
    log["samples"] = {d: greedy(model, p, 120) for d, p in prompts.items()}
    print(json.dumps(log, indent=1, ensure_ascii=False), flush=True)

    write_safetensors(os.path.join(args.out, "model.safetensors"), list(hf_tensors(model)))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c.hf(), f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump({"dancemoe_tokenizer": "bytes", "vocab_size": VOCAB, "bos_token_id": BOS, "eos_token_id": EOS}, f, indent=2)
        f.write("\n")
    for d, data in heldout.items():
        with open(os.path.join(args.out, "heldout", f"{d}.txt"), "wb") as f:
            f.write(bytes(data.to(torch.uint8).tolist()))
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
