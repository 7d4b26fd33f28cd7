#!/usr/bin/python3
"""The DeepSeek-V3 training step in PyTorch (float32, CPU), for measuring DeepSeekSharp's training speed against it.

Same model, loss and optimizer as `dss train`: MLA with q-LoRA (or a plain q_proj), interleaved decoupled RoPE with
YaRN, DeepSeekMoE with sigmoid + noaux_tc group-limited routing (or softmax greedy), shared experts, one MTP module
tied to the embedding and head, next-token + lambda * MTP cross-entropy + alpha * sequence-wise balance loss, global
norm clipping, torch.optim.AdamW (decay on 2-D tensors), and the auxiliary-loss-free bias update.

    # the implementation reproduces the golden losses of a checkpoint (proves it is the same model):
    /usr/bin/python3 bench/training/torch_reference.py check tests/data/train/v3-tiny tests/data/v3-tiny
    # training tokens/s of a model shape (config.json fields), batch and sequence length:
    /usr/bin/python3 bench/training/torch_reference.py bench bench/training/model-small.json --batch 8 --seq 128 --steps 5 --threads 2
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Cfg:
    def __init__(self, d):
        self.v = d["vocab_size"]; self.d = d["hidden_size"]; self.inter = d.get("intermediate_size", 0)
        self.moe_inter = d.get("moe_intermediate_size", 0); self.layers = d["num_hidden_layers"]
        self.dense = d.get("first_k_dense_replace", 0); self.heads = d["num_attention_heads"]
        self.experts = d.get("n_routed_experts") or 0; self.shared = d.get("n_shared_experts") or 0
        self.k = d.get("num_experts_per_tok") or 0; self.groups = d.get("n_group") or 1; self.topk_groups = d.get("topk_group") or 1
        self.method = d.get("topk_method", "greedy"); self.score = d.get("scoring_func", "softmax")
        self.norm_topk = d.get("norm_topk_prob", False); self.route_scale = d.get("routed_scaling_factor", 1.0)
        self.q_rank = d.get("q_lora_rank") or 0; self.kv_rank = d["kv_lora_rank"]; self.nope = d["qk_nope_head_dim"]
        self.rope = d["qk_rope_head_dim"]; self.vd = d["v_head_dim"]; self.theta = d.get("rope_theta", 10000)
        self.eps = d.get("rms_norm_eps", 1e-6); self.mtp = d.get("num_nextn_predict_layers", 0)
        self.tie = d.get("tie_word_embeddings", False); self.yarn = d.get("rope_scaling")
        self.scale = (self.nope + self.rope) ** -0.5
        if self.yarn and self.yarn.get("mscale_all_dim"):
            m = yarn_mscale(self.yarn["factor"], self.yarn["mscale_all_dim"])
            self.scale *= m * m


def yarn_mscale(factor, mscale):
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_tables(c, T):
    d, half = c.rope, c.rope // 2
    inv = [1.0 / c.theta ** (2.0 * i / d) for i in range(half)]
    scale = 1.0
    if c.yarn:
        y = c.yarn
        def corr(rot):
            return d * math.log(y["original_max_position_embeddings"] / (rot * 2 * math.pi)) / (2 * math.log(c.theta))
        low = max(math.floor(corr(y["beta_fast"])), 0); high = min(math.ceil(corr(y["beta_slow"])), d - 1)
        if low == high: high += 0.001
        for i in range(half):
            ramp = min(max((i - low) / (high - low), 0), 1)
            inv[i] = inv[i] / y["factor"] * ramp + inv[i] * (1 - ramp)
        scale = yarn_mscale(y["factor"], y.get("mscale", 1)) / yarn_mscale(y["factor"], y.get("mscale_all_dim", 1))
    ang = torch.tensor([[p * f for f in inv] for p in range(T)], dtype=torch.float64)
    return (torch.cos(ang) * scale).float(), (torch.sin(ang) * scale).float()


def rope(x, cos, sin):  # x [..., T, R], interleaved pairs
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def manifest(c):
    """(name, shape) of every tensor, Hugging Face names."""
    out = [("model.embed_tokens.weight", (c.v, c.d))]
    def block(l, moe):
        p = f"model.layers.{l}."
        t = [(p + "input_layernorm.weight", (c.d,))]
        qo = c.heads * (c.nope + c.rope)
        if c.q_rank:
            t += [(p + "self_attn.q_a_proj.weight", (c.q_rank, c.d)), (p + "self_attn.q_a_layernorm.weight", (c.q_rank,)),
                  (p + "self_attn.q_b_proj.weight", (qo, c.q_rank))]
        else:
            t += [(p + "self_attn.q_proj.weight", (qo, c.d))]
        t += [(p + "self_attn.kv_a_proj_with_mqa.weight", (c.kv_rank + c.rope, c.d)), (p + "self_attn.kv_a_layernorm.weight", (c.kv_rank,)),
              (p + "self_attn.kv_b_proj.weight", (c.heads * (c.nope + c.vd), c.kv_rank)), (p + "self_attn.o_proj.weight", (c.d, c.heads * c.vd)),
              (p + "post_attention_layernorm.weight", (c.d,))]
        def mlp(q, i):
            return [(q + "gate_proj.weight", (i, c.d)), (q + "up_proj.weight", (i, c.d)), (q + "down_proj.weight", (c.d, i))]
        if not moe:
            return t + mlp(p + "mlp.", c.inter)
        t += [(p + "mlp.gate.weight", (c.experts, c.d))]
        for e in range(c.experts): t += mlp(p + f"mlp.experts.{e}.", c.moe_inter)
        if c.shared: t += mlp(p + "mlp.shared_experts.", c.shared * c.moe_inter)
        return t
    for l in range(c.layers): out += block(l, c.experts > 0 and l >= c.dense)
    out += [("model.norm.weight", (c.d,))]
    if not c.tie: out += [("lm_head.weight", (c.v, c.d))]
    for k in range(c.mtp):
        l = c.layers + k; p = f"model.layers.{l}."
        out += [(p + "enorm.weight", (c.d,)), (p + "hnorm.weight", (c.d,)), (p + "eh_proj.weight", (c.d, 2 * c.d))]
        out += block(l, c.experts > 0)
        out += [(p + "shared_head.norm.weight", (c.d,))]
    return out


def bias_layers(c):
    if c.method != "noaux_tc": return []
    return [l for l in range(c.layers + c.mtp) if c.experts > 0 and (l >= c.dense)]


class Model:
    def __init__(self, c, params, biases):
        self.c, self.p, self.b = c, params, biases

    def attention(self, l, x, cos, sin):
        c, p = self.c, self.p; q = f"model.layers.{l}.self_attn."
        B, T, _ = x.shape
        if c.q_rank:
            qq = rms_norm(x @ p[q + "q_a_proj.weight"].t(), p[q + "q_a_layernorm.weight"], c.eps) @ p[q + "q_b_proj.weight"].t()
        else:
            qq = x @ p[q + "q_proj.weight"].t()
        qq = qq.view(B, T, c.heads, c.nope + c.rope).transpose(1, 2)
        q_nope, q_pe = qq[..., :c.nope], rope(qq[..., c.nope:], cos, sin)
        kva = x @ p[q + "kv_a_proj_with_mqa.weight"].t()
        latent = rms_norm(kva[..., :c.kv_rank], p[q + "kv_a_layernorm.weight"], c.eps)
        k_pe = rope(kva[..., c.kv_rank:], cos, sin).unsqueeze(1)                # [B, 1, T, R]
        kv = (latent @ p[q + "kv_b_proj.weight"].t()).view(B, T, c.heads, c.nope + c.vd).transpose(1, 2)
        k_nope, v = kv[..., :c.nope], kv[..., c.nope:]
        scores = (q_nope @ k_nope.transpose(-1, -2) + q_pe @ k_pe.transpose(-1, -2)) * c.scale
        mask = torch.full((T, T), float("-inf")).triu(1)
        o = torch.softmax(scores + mask, dim=-1) @ v                             # [B, H, T, V]
        return o.transpose(1, 2).reshape(B, T, c.heads * c.vd) @ p[q + "o_proj.weight"].t()

    def mlp(self, prefix, x):
        p = self.p
        return (F.silu(x @ p[prefix + "gate_proj.weight"].t()) * (x @ p[prefix + "up_proj.weight"].t())) @ p[prefix + "down_proj.weight"].t()

    def moe(self, l, x, loads, alpha):
        c, p = self.c, self.p; pre = f"model.layers.{l}.mlp."
        B, T, D = x.shape
        flat = x.reshape(-1, D)
        logits = flat @ p[pre + "gate.weight"].t()
        s = torch.sigmoid(logits) if c.score == "sigmoid" else torch.softmax(logits, dim=-1)
        with torch.no_grad():
            choice = s + self.b[l] if l in self.b else s.clone()
            if c.method != "greedy" and c.groups > 1:
                g = choice.view(-1, c.groups, c.experts // c.groups)
                gs = g.topk(2, dim=-1)[0].sum(-1) if l in self.b else g.max(-1)[0]
                keep = gs.topk(c.topk_groups, dim=-1)[1]
                m = torch.ones_like(gs, dtype=torch.bool).scatter_(1, keep, False)
                choice = g.masked_fill(m.unsqueeze(-1), float("-inf")).view(-1, c.experts)
            idx = choice.topk(c.k, dim=-1)[1]
        w = s.gather(1, idx)
        if c.norm_topk: w = w / w.sum(-1, keepdim=True)
        w = w * c.route_scale
        out = self.mlp(pre + "shared_experts.", flat) if c.shared else torch.zeros_like(flat)
        for e in range(c.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0: continue
            out = out.index_add(0, tok, self.mlp(pre + f"experts.{e}.", flat[tok]) * w[tok, slot].unsqueeze(-1))
        counts = F.one_hot(idx, c.experts).sum(1).view(B, T, c.experts).sum(1).float()      # [B, E]
        loads[l] = counts.sum(0)
        sp = (s / s.sum(-1, keepdim=True)) if c.score == "sigmoid" else s
        f = counts * c.experts / (c.k * T)
        balance = alpha * (f * sp.view(B, T, -1).mean(1)).sum(-1).mean()
        return out.view(B, T, D), balance

    def block(self, l, x, cos, sin, loads, alpha):
        c, p = self.c, self.p; pre = f"model.layers.{l}."
        x = x + self.attention(l, rms_norm(x, p[pre + "input_layernorm.weight"], c.eps), cos, sin)
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], c.eps)
        if c.experts > 0 and l >= c.dense:
            y, bal = self.moe(l, h, loads, alpha)
        else:
            y, bal = self.mlp(pre + "mlp.", h), torch.zeros(())
        return x + y, bal

    def loss(self, tokens, lam, alpha, loads):
        c, p = self.c, self.p
        B, T = tokens.shape
        cos, sin = rope_tables(c, T)
        embed = p["model.embed_tokens.weight"]; head = embed if c.tie else p["lm_head.weight"]
        x = embed[tokens]
        balance = torch.zeros(())
        for l in range(c.layers):
            x, b = self.block(l, x, cos, sin, loads, alpha); balance = balance + b
        h = rms_norm(x, p["model.norm.weight"], c.eps)
        main = F.cross_entropy((h[:, :-1] @ head.t()).reshape(-1, c.v), tokens[:, 1:].reshape(-1))
        mtp = torch.zeros(())
        if c.mtp:
            l = c.layers; pre = f"model.layers.{l}."
            e = rms_norm(embed[tokens[:, 1:]], p[pre + "enorm.weight"], c.eps)
            hh = rms_norm(h[:, :-1], p[pre + "hnorm.weight"], c.eps)
            xm = torch.cat((e, hh), -1) @ p[pre + "eh_proj.weight"].t()
            cos2, sin2 = rope_tables(c, T - 1)
            xm, b = self.block(l, xm, cos2, sin2, loads, alpha); balance = balance + b
            hm = rms_norm(xm, p[pre + "shared_head.norm.weight"], c.eps)
            mtp = F.cross_entropy((hm[:, :-1] @ head.t()).reshape(-1, c.v), tokens[:, 2:].reshape(-1))
        return main + lam * mtp + balance, main, mtp, balance


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n)); data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__": continue
        a, b = t["data_offsets"]; raw = np.frombuffer(data[a:b], dtype=np.uint8)
        if t["dtype"] == "F32": v = raw.view(np.float32)
        elif t["dtype"] == "BF16": v = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif t["dtype"] == "F64": v = raw.view(np.float64).astype(np.float32)
        else: raise SystemExit(f"{path}: {name} is {t['dtype']}")
        out[name] = torch.from_numpy(v.copy()).view(t["shape"])
    return out


def check(golden_dir, model_dir):
    cfg = json.load(open(f"{model_dir}/config.json")); c = Cfg(cfg)
    w = read_safetensors(f"{model_dir}/model.safetensors")
    params = {n: w[n].clone() for n, _ in manifest(c)}
    biases = {l: w[f"model.layers.{l}.mlp.gate.e_score_correction_bias"] for l in bias_layers(c)}
    batch = json.load(open(f"{golden_dir}/batch.json")); exp = json.load(open(f"{golden_dir}/expected.json"))["losses"]
    lam = batch["loss"].get("lambda", 0.0); alpha = batch["loss"]["alpha"]
    total, main, mtp, bal = Model(c, params, biases).loss(torch.tensor(batch["input_ids"]), lam, alpha, {})
    ok = True
    for name, got in [("main_ce", main), ("mtp_ce", mtp), ("balance", bal), ("total", total)]:
        if name not in exp: continue
        rel = abs(got.item() - exp[name]) / abs(exp[name])
        ok &= rel <= 1e-5
        print(f"{name}: torch float32 {got.item():.9g}, golden {exp[name]:.9g}, relative difference {rel:.1e}")
    sys.exit(0 if ok else 1)


def bench(config_path, batch, seq, steps, threads, seed):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    c = Cfg(json.load(open(config_path)))
    params = {}
    for n, shape in manifest(c):
        if len(shape) == 1: params[n] = torch.ones(shape)
        else:
            std = 1.0 if n.endswith("embed_tokens.weight") else 1.0 / math.sqrt(shape[1])
            params[n] = (torch.rand(shape) * 2 - 1) * std * math.sqrt(3)
        params[n].requires_grad_(True)
    biases = {l: torch.zeros(c.experts) for l in bias_layers(c)}
    model = Model(c, params, biases)
    decay = [p for p in params.values() if p.dim() == 2]; keep = [p for p in params.values() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    times = []
    for step in range(steps + 1):
        tokens = torch.randint(0, c.v, (batch, seq))
        t0 = time.perf_counter()
        loads = {}
        opt.zero_grad(set_to_none=True)
        total, *_ = model.loss(tokens, 0.3, 1e-4, loads)
        total.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        with torch.no_grad():
            for l, b in biases.items():
                b += 1e-3 * torch.sign(loads[l].mean() - loads[l])
        if step > 0: times.append(time.perf_counter() - t0)  # step 0 warms up
    tps = batch * seq / (sum(times) / len(times))
    print(json.dumps({"engine": "pytorch", "torch": torch.__version__, "threads": threads, "batch": batch, "seq_len": seq,
                      "steps": steps, "seconds_per_step": sum(times) / len(times), "tokens_per_s": tps}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("check"); a.add_argument("golden"); a.add_argument("model")
    b = sub.add_parser("bench"); b.add_argument("config"); b.add_argument("--batch", type=int, default=8)
    b.add_argument("--seq", type=int, default=128); b.add_argument("--steps", type=int, default=5)
    b.add_argument("--threads", type=int, default=1); b.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "check": check(args.golden, args.model)
    else: bench(args.config, args.batch, args.seq, args.steps, args.threads, args.seed)


if __name__ == "__main__":
    main()
