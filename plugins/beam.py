"""Beam search for the paper's decoding without copying the key/value cache.

The released code decodes with transformers' ``model.generate(num_beams=5, min_new_tokens =
max_new_tokens = 64, repetition_penalty=3.0)``. On a CPU about half of that call's time goes into
the key/value cache: transformers grows it by concatenation at every step and reorders all of it
(prompt included) by ``index_select`` whenever beams are re-ranked, and it runs the prompt through
the model once per beam. :func:`beam_search` computes the same tokens with less copying:

- the prompt is run through the model once per prompt, not once per beam, and its keys and
  values are written into a preallocated buffer for all of the prompt's beams;
- each decoding step writes its keys and values in place (no concatenation);
- beams of one prompt share the prompt's keys and values, and a re-ranked beam keeps its parent's
  cache row: only a parent's second and later children get a copy, of the generated part only.

The beam bookkeeping (top-2K candidates, running and finished beams, the early-stop heuristic) is
transformers' ``GenerationMixin._beam_search`` op for op, with the logits processors of these
settings: repetition penalty, eos masked while fewer than ``min_new_tokens`` are generated, and
suppressed tokens. The attention sees views of the buffer with the same shapes and values as
transformers' ``DynamicCache`` tensors, so on the CPU in fp32 the tokens are equal to
``model.generate``'s (tests/test_beam.py compares them, ties and eos included).

:func:`fast_path_refusal` says when this search does not apply (sampling, one beam, a model other
than OPT, a GPU unless asked for, ``BENCH_HF_GENERATE=reference``); the caller then runs
``model.generate`` unchanged.
"""

from __future__ import annotations

import os

GENERATE_ENV = "BENCH_HF_GENERATE"
GENERATE_MODES = ("auto", "fast", "reference")

# transformers' constant for "never choose this beam" in _beam_search
_NEVER = -1.0e9

# GenerationConfig fields beam_search reproduces; any other field away from its default means
# model.generate. Sampling fields are inert without do_sample.
_REPRODUCED = frozenset({
    "num_beams", "do_sample", "min_new_tokens", "max_new_tokens",
    "repetition_penalty", "length_penalty", "early_stopping", "num_return_sequences", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "suppress_tokens", "transformers_version",
})
_SAMPLING_ONLY = frozenset({"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff",
                            "eta_cutoff"})


def generate_mode() -> str:
    """``BENCH_HF_GENERATE``: ``auto`` (default), ``fast`` or ``reference``; BenchError otherwise."""
    from bench.errors import BenchError

    mode = os.environ.get(GENERATE_ENV, "").strip().lower() or "auto"
    if mode not in GENERATE_MODES:
        raise BenchError(
            f"{GENERATE_ENV}={os.environ.get(GENERATE_ENV)!r} is not one of {GENERATE_MODES}: "
            "reference forces transformers' model.generate, fast the cache-sharing beam search, "
            "auto (or unset) uses the fast search where its tokens are known to be equal (CPU, fp32)"
        )
    return mode


def fast_path_refusal(config, model, device, dtype, mode: str) -> str | None:
    """Why :func:`beam_search` cannot stand in for ``model.generate(generation_config=config)``;
    None when it can.

    ``mode`` is :func:`generate_mode`'s. ``auto`` takes the fast path only on the CPU in fp32
    (where its tokens are tested equal); ``fast`` also on other devices and dtypes, where the
    arithmetic may differ in the last bits from transformers' (benchmarks/generation_speed.py
    reports the token agreement there).
    """
    import torch

    if mode == "reference":
        return f"{GENERATE_ENV}=reference"
    if config.do_sample:
        return "sampling"
    if int(config.num_beams or 1) < 2:
        return "fewer than 2 beams"
    if getattr(model.config, "model_type", None) != "opt":
        return f"model type {getattr(model.config, 'model_type', None)!r} (only OPT is implemented)"
    if model.config._attn_implementation != "sdpa":
        return f"attention implementation {model.config._attn_implementation!r}"
    if config.min_new_tokens is None or config.max_new_tokens is None:
        return "no fixed number of new tokens"
    if int(config.min_new_tokens) != int(config.max_new_tokens):
        return "min_new_tokens differs from max_new_tokens (beams could end at eos)"
    if config.length_penalty not in (None, 1.0) or config.early_stopping not in (None, False):
        return "length_penalty or early_stopping other than transformers' defaults"
    if config.num_return_sequences not in (None, 1):
        return "more than one returned sequence"
    from transformers import GenerationConfig

    defaults = GenerationConfig().to_dict()
    for key, value in config.to_dict().items():
        if key not in _REPRODUCED and key not in _SAMPLING_ONLY and value != defaults.get(key):
            return f"generation setting {key}={value!r}"
    if mode == "auto" and (device.type != "cpu" or dtype != torch.float32):
        return f"{device.type} {dtype} (set {GENERATE_ENV}=fast to use it anyway)"
    return None


class _BeamKV:
    """One layer's keys and values for ``rows`` beams in preallocated (rows, heads, length, dim)
    buffers, written in place; the attention sees views of the filled prefix."""

    def __init__(self, rows: int, beams: int, max_length: int):
        self.rows, self.beams, self.max_length = rows, beams, max_length
        self.keys = self.values = None
        self.length = 0
        self.prompt_length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        import torch

        n = key_states.shape[-2]
        if self.keys is None:
            # The prefill: one row per prompt. Every beam of a prompt gets the same keys and values;
            # this forward pass attends to the prompt rows, contiguous as DynamicCache's concatenation.
            prompts, heads, _, dim = key_states.shape
            shape = (self.rows, heads, self.max_length, dim)
            self.keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
            self.values = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)
            grouped = (prompts, self.beams, heads, self.max_length, dim)
            self.keys.view(grouped)[:, :, :, :n] = key_states[:, None]
            self.values.view(grouped)[:, :, :, :n] = value_states[:, None]
            self.length = self.prompt_length = n
            return key_states.contiguous(), value_states.contiguous()
        end = self.length + n
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def copy_rows(self, dst, src) -> None:
        """Rows ``dst`` take the generated keys and values of rows ``src`` (no row is both; the
        prompt part is the same for every beam of a prompt, and beams move only within their prompt)."""
        start, end = self.prompt_length, self.length
        if end > start:
            for buffer in (self.keys, self.values):
                generated = buffer[:, :, start:end]
                generated.index_copy_(0, dst, generated.index_select(0, src))

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return -1


def _beam_cache(rows: int, beams: int, max_length: int, layers: int):
    from transformers.cache_utils import Cache, DynamicLayer

    class BeamKVLayer(_BeamKV, DynamicLayer):  # a DynamicLayer for transformers' mask and cache checks
        def __init__(self):
            DynamicLayer.__init__(self)
            _BeamKV.__init__(self, rows, beams, max_length)
            self.is_initialized = True

    return Cache(layers=[BeamKVLayer() for _ in range(layers)])


def _place_children(rows_of, parents, earlier):
    """The cache rows of the new beams, and the copies that give them their parents' keys and values.

    ``rows_of`` (B, K): the row of each old beam; ``parents`` (B, K): each new beam's parent, an old
    beam of the same prompt. The first child of a parent keeps the parent's row; the other
    children take, in order, the rows of old beams that have no child, which receive a copy of the
    parent's row. Returns (new rows_of, destination rows, source rows).
    """
    import torch

    same_parent = parents[:, :, None] == parents[:, None, :]
    first = ~(same_parent & earlier).any(dim=-1)
    has_child = torch.zeros_like(first).scatter_(1, parents, True)
    childless = torch.argsort(has_child.to(torch.int8), dim=1, stable=True)  # childless old beams first
    rank = (torch.cumsum(~first, dim=1) - 1).clamp(min=0)
    take = torch.where(first, parents, torch.gather(childless, 1, rank))
    new_rows = torch.gather(rows_of, 1, take)
    later = ~first
    return new_rows, new_rows[later], torch.gather(rows_of, 1, parents)[later]


def beam_search(model, input_ids, config):
    """The sequences ``model.generate(input_ids, attention_mask=ones, generation_config=config)``
    returns, for a config :func:`fast_path_refusal` accepts: (B, P + new tokens) int64.

    ``input_ids`` (B, P): B unpadded prompts of P tokens. Run under ``torch.inference_mode()``.
    """
    import torch
    from torch.nn import functional as F

    device = input_ids.device
    batch, prompt_length = input_ids.shape
    beams = int(config.num_beams)
    new_tokens = int(config.max_new_tokens)
    max_length = prompt_length + new_tokens
    rows = batch * beams
    penalty = float(config.repetition_penalty or 1.0)
    eos = config.eos_token_id
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=device)
    suppressed = torch.tensor(list(config.suppress_tokens or []), dtype=torch.long, device=device)
    keep = max(2, 1 + len(eos_ids)) * beams  # transformers' beams_to_keep
    top_beam_mask = torch.cat((torch.ones(beams, dtype=torch.bool), torch.zeros(keep - beams, dtype=torch.bool)))
    top_beam_mask = top_beam_mask.to(device)

    def gather(tensor, index):
        """GenerationMixin._gather_beams: tensor[b, index[b, j]] (B, k, ...), as whole rows."""
        if tensor.dim() == 2:
            return torch.gather(tensor, 1, index)
        width = tensor.shape[1]
        rows = (index + torch.arange(index.shape[0], device=device)[:, None] * width).reshape(-1)
        flat = tensor.reshape(tensor.shape[0] * width, *tensor.shape[2:])
        return flat.index_select(0, rows).view(*index.shape, *tensor.shape[2:])

    pad = config.pad_token_id
    fill = (pad or eos_ids[0]) if eos_ids else -1
    running_sequences = torch.full((batch, beams, max_length), fill, dtype=torch.int64, device=device)
    running_sequences[:, :, :prompt_length] = input_ids[:, None]
    sequences = running_sequences.clone()
    running_scores = torch.zeros((batch, beams), dtype=torch.float, device=device)
    running_scores[:, 1:] = _NEVER
    beam_scores = torch.full((batch, beams), _NEVER, dtype=torch.float, device=device)
    is_sent_finished = torch.zeros((batch, beams), dtype=torch.bool, device=device)
    improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)
    running_beam_indices = torch.full((batch, beams, new_tokens), -1, dtype=torch.int32, device=device)
    beam_indices = running_beam_indices.clone()
    batch_offset = torch.arange(batch, device=device).view(-1, 1) * beams
    rows_of = torch.arange(rows, device=device).view(batch, beams)  # the cache row of each beam
    earlier = torch.ones((beams, beams), dtype=torch.bool, device=device).tril(-1)

    cache = _beam_cache(rows, beams, max_length, int(model.config.num_hidden_layers))
    out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1, return_dict=True)
    logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32).repeat_interleave(beams, dim=0)
    del out
    cur_len = prompt_length
    while True:
        # b. log-probabilities, then the logits processors of these settings, in transformers' order
        log_probs = F.log_softmax(logits, dim=-1)
        vocab = log_probs.shape[-1]
        eos_columns, suppressed_columns = eos_tensor[eos_tensor < vocab], suppressed[suppressed < vocab]
        # (in place where transformers makes copies: the values are the same)
        if penalty != 1.0:  # RepetitionPenaltyLogitsProcessor (no prompt ignored: nothing is padded)
            history = running_sequences[:, :, :cur_len].reshape(rows, cur_len)
            if int(history.max()) >= vocab:  # ids the head cannot produce: transformers drops them
                padded = F.pad(log_probs, (0, 1))
                ids = history.clamp(max=vocab)
                score = torch.gather(padded, 1, ids)
                score = torch.where(score < 0, score * penalty, score / penalty)
                log_probs = padded.scatter(1, ids, score)[..., :vocab].contiguous()
            else:
                score = torch.gather(log_probs, 1, history)
                score = torch.where(score < 0, score * penalty, score / penalty)
                log_probs.scatter_(1, history, score)
        if eos_ids and cur_len < prompt_length + int(config.min_new_tokens):
            log_probs[:, eos_columns] = -float("inf")  # MinLength / MinNewTokens
        if suppressed_columns.numel():
            log_probs[:, suppressed_columns] = -float("inf")  # SuppressTokens
        log_probs = log_probs.view(batch, beams, vocab).add_(running_scores[:, :, None])
        log_probs = log_probs.view(batch, beams * vocab)

        # c. the top 2K continuations over all beams (_get_top_k_continuations)
        topk_log_probs, topk_indices = torch.topk(log_probs, k=keep)
        topk_beams = topk_indices // vocab
        topk_running_beam_indices = gather(running_beam_indices, topk_beams)
        topk_running_sequences = gather(running_sequences, topk_beams)
        topk_ids = topk_indices % vocab
        topk_running_sequences[:, :, cur_len] = topk_ids
        topk_running_beam_indices[:, :, cur_len - prompt_length] = topk_beams + batch_offset

        # d. which continuations are done: max length reached, or an eos chosen
        hits = torch.isin(topk_ids, eos_tensor) if eos_ids else torch.zeros_like(topk_ids, dtype=torch.bool)
        if cur_len + 1 >= max_length:
            hits = torch.ones_like(hits)

        # e. the K best unfinished continuations run on (_get_running_beams_for_next_iteration)
        running_log_probs = topk_log_probs + hits.to(torch.float32) * _NEVER
        next_indices = torch.topk(running_log_probs, k=beams)[1]
        running_sequences = gather(topk_running_sequences, next_indices)
        running_scores = gather(running_log_probs, next_indices)
        running_beam_indices = gather(topk_running_beam_indices, next_indices)

        # f. finished continuations among the top K join the finished beams (_update_finished_beams)
        just_finished = hits & top_beam_mask[None, :]
        finished_scores = topk_log_probs / ((cur_len + 1 - prompt_length) ** 1.0)  # length_penalty 1
        finished_scores += (~improvable).to(torch.float32) * _NEVER
        finished_scores += (~just_finished) * _NEVER
        merged_scores = torch.cat((beam_scores, finished_scores), dim=1)
        best = torch.topk(merged_scores, k=beams)[1]
        sequences = gather(torch.cat((sequences, topk_running_sequences), dim=1), best)
        beam_scores = gather(merged_scores, best)
        beam_indices = gather(torch.cat((beam_indices, topk_running_beam_indices), dim=1), best)
        is_sent_finished = gather(torch.cat((is_sent_finished, just_finished), dim=1), best)

        # g. the early-stop heuristic (early_stopping False, length_penalty 1) and the loop's end
        cur_len += 1
        best_running = running_scores[:, :1] / ((cur_len - prompt_length) ** 1.0)
        worst_finished = torch.where(is_sent_finished, torch.min(beam_scores, dim=1, keepdim=True)[0], _NEVER)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        if not (bool(torch.any(improvable)) and not bool(torch.all(hits))):
            break

        # a. the next step. A beam's keys and values stay in the cache row of its parent (``rows_of``
        # maps beam to row); only a second child of a parent gets a free row, its parent's keys and
        # values copied there. The model sees the beams' tokens in row order and its logits are put
        # back in beam order.
        parents = (running_beam_indices[..., cur_len - 1 - prompt_length] - batch_offset).long()
        rows_of, dst, src = _place_children(rows_of, parents, earlier)
        if dst.numel():
            for layer in cache.layers:
                layer.copy_rows(dst, src)
        tokens = torch.empty(rows, dtype=torch.int64, device=device)
        tokens[rows_of.view(rows)] = running_sequences[:, :, cur_len - 1].reshape(rows)
        out = model(input_ids=tokens[:, None], cache=cache, use_cache=True, logits_to_keep=1, return_dict=True)
        logits = out.logits[:, -1, :].index_select(0, rows_of.view(rows)).to(dtype=torch.float32)
        del out

    # 5. the best finished beam of each prompt, cropped as transformers does
    best_indices = beam_indices[:, 0, :]
    generated = int(((best_indices + 1).bool()).sum(dim=1).max())
    return sequences[:, 0, : prompt_length + generated]

