"""engine.py: nanochat's Engine (nanochat/engine.py: generate,
generate_batch) on the C library, plus generate_many for whole lists of
prompts through its continuous-batching scheduler.

Semantics are nanochat's: one prefill of the prompt whose last logits all
num_samples rows share; per step one token per row, yielded as a column
with its masks (1 sampled, 0 forced by the calculator after a row's
<|python_start|> expr <|python_end|>); a row is complete once it has
yielded <|assistant_end|> or <|bos|>; the generator stops when every row is
complete or after max_tokens steps (None: the context's end). Greedy tokens
(temperature 0) are PyTorch's; sampled ones come from the library's own
generator (row i seeded with seed + i), reproducible but not torch's.

Each request is a C nc_request; Python steps the engine (one forward pass
per call, the GIL released) until the rows it waits for have their next
token, so Ctrl-C lands between steps: KeyboardInterrupt, or closing the
generator, cancels the request and frees its KV cache.
"""
import ctypes
import threading
from typing import List, NamedTuple, Optional

from . import _lib
from ._ids import as_ids, as_prompts
from ._lib import NanochatError
from .tokenizer import Tokenizer

READ_CHUNK = 256  # tokens fetched per nc_request_read call


class Config(NamedTuple):
    """The model's shape, named as nanochat's GPTConfig."""
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int


class Completion(NamedTuple):
    """One sample of generate_many."""
    tokens: List[int]                # generated ids, the terminal token excluded (generate_batch's tail)
    masks: List[int]                 # 1 sampled, 0 forced by the calculator
    logprobs: Optional[List[float]]  # the model's log-probability of each token (0.0 where forced),
                                     # None unless logprobs=True
    finish_reason: str               # "stop" (<|assistant_end|> or <|bos|>) or "length"


class Model:
    """A loaded model: the C engine handle, its shape and its tokenizer."""

    def __init__(self, handle):
        self._handle = handle
        info = _lib.EngineInfo()
        if _lib.lib().nc_engine_get_info(handle, ctypes.byref(info)) != 0:
            _lib.fail()
        self.info = info
        self.config = Config(info.sequence_len, info.vocab_size, info.n_layer, info.n_head, info.n_kv_head,
                             info.n_embd)
        self.device = info.device.decode()
        self.tokenizer = Tokenizer(self)

    def handle(self):
        if not self._handle:
            raise NanochatError("the model is closed")
        return self._handle

    def get_device(self):
        """"cuda" or "cpu" (nanochat's model.get_device() gives a torch device)."""
        return "cpu" if self.device.startswith("cpu") else "cuda"

    def close(self):
        """Frees the model, its KV cache and every request still open. No
        other thread may be using it."""
        if self._handle:
            _lib.lib().nc_engine_close(self._handle)
            self._handle = None

    def __del__(self):
        if getattr(self, "_handle", None) and _lib is not None:
            self.close()


class _Request:
    """One submitted nc_request and what its rows produced so far."""

    def __init__(self, model, ids, num_samples, max_tokens, temperature, top_k, seed, logprobs):
        lib = _lib.lib()
        self.model, self.n = model, num_samples
        opts = _lib.RequestOptions()
        opts.sampling.temperature = temperature
        opts.sampling.top_k = 0 if top_k is None else top_k
        opts.sampling.seed = seed
        opts.sampling.max_tokens = max_tokens
        opts.n, opts.logprobs = num_samples, int(logprobs)
        prompt = _lib.Prompt()
        arr = (ctypes.c_int32 * len(ids))(*ids)
        prompt.ids, prompt.n_ids = arr, len(ids)
        self._h = lib.nc_request_submit(model.handle(), ctypes.byref(prompt), ctypes.byref(opts))
        if not self._h:
            _lib.fail()
        self.tokens = [[] for _ in range(num_samples)]
        self.masks = [[] for _ in range(num_samples)]
        self.logprobs = [[] for _ in range(num_samples)] if logprobs else None
        self.finish = [None] * num_samples
        self._buf = ((ctypes.c_int32 * READ_CHUNK)(), (ctypes.c_uint8 * READ_CHUNK)(),
                     (ctypes.c_float * READ_CHUNK)() if logprobs else None)

    def sync(self):
        """Fetches every row's new tokens and finish reasons."""
        lib = _lib.lib()
        tok, msk, lp = self._buf
        fin = ctypes.c_int()
        for i in range(self.n):
            if self.finish[i] is not None:
                continue
            while True:
                have = len(self.tokens[i])
                total = lib.nc_request_read(self._h, i, have, tok, msk, lp, READ_CHUNK, ctypes.byref(fin))
                got = max(0, min(READ_CHUNK, total - have))
                self.tokens[i] += tok[:got]
                self.masks[i] += msk[:got]
                if lp is not None:
                    self.logprobs[i] += lp[:got]
                if have + got >= total:
                    break
            self.finish[i] = _lib.FINISH_NAMES[fin.value]
        if "error" in self.finish:
            raise NanochatError(f"generation failed: {lib.nc_request_error(self._h).decode('utf-8', 'replace')}")

    def done(self):
        return all(f is not None for f in self.finish)

    def free(self):
        """Frees the request; an unfinished one is cancelled (its KV cache
        is released by the engine's next step)."""
        if self._h:
            _lib.lib().nc_request_free(self._h)
            self._h = None


def _step(model):
    if _lib.lib().nc_engine_step(model.handle()) < 0:
        _lib.fail()


def _check_sampling(num_samples, temperature, top_k, seed):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"num_samples must be an int, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if top_k is not None and not isinstance(top_k, int):
        raise TypeError(f"top_k must be an int or None, got {top_k!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    float(temperature)  # TypeError for non-numbers; ranges are the library's


class Engine:
    """nanochat's Engine: Engine(model, tokenizer) or nanochat_c.load(...)."""

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer

    def close(self):
        self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _max_tokens(self, max_tokens):
        """nanochat's None (no limit but the context) as the library's count."""
        return self.model.info.max_context if max_tokens is None else max_tokens

    def generate(self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, seed=42):
        """Yields (token_column, token_masks) per step, one entry per row. A
        complete row keeps appearing with its terminal token repeated (callers
        ignore it, as with nanochat, whose rows go on sampling)."""
        ids = as_ids(tokens)
        _check_sampling(num_samples, temperature, top_k, seed)
        if max_tokens is not None and max_tokens == 0:
            return
        req = _Request(self.model, ids, num_samples, self._max_tokens(max_tokens), temperature, top_k, seed, False)
        try:
            step = 0
            while True:
                req.sync()
                while not all(len(t) > step or f is not None for t, f in zip(req.tokens, req.finish)):
                    _step(self.model)
                    req.sync()
                if all(len(t) <= step for t in req.tokens):
                    return  # every row completed (or reached the context's end) before this step
                column, masks = [], []
                for t, m in zip(req.tokens, req.masks):
                    k = min(step, len(t) - 1)
                    column.append(t[k])
                    masks.append(m[k] if k == step else 1)
                yield column, masks
                step += 1
        finally:
            req.free()

    def generate_batch(self, tokens, num_samples=1, **kwargs):
        """(results, masks): per row the prompt followed by the generated ids
        up to but excluding the terminal token, and 0 for every prompt position
        followed by the generated tokens' masks. kwargs: generate's."""
        ids = as_ids(tokens)
        (samples,) = self.generate_many([ids], num_samples, **kwargs)
        return [ids + s.tokens for s in samples], [[0] * len(ids) + s.masks for s in samples]

    def generate_many(self, prompts, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, seed=42,
                      logprobs=False):
        """Runs every prompt (num_samples rows each) through the batched
        scheduler at once. Returns, per prompt, a list of num_samples
        Completion(tokens, masks, logprobs, finish_reason).

        seed: an int gives every prompt that seed (the same samples as a loop
        calling generate_batch(prompt, seed=seed)); a list gives one per
        prompt. logprobs=True records each token's log-probability (on a GPU
        this copies the logits to the host: slower)."""
        prompt_ids = as_prompts(prompts)
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(prompt_ids)
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        for s in seeds:
            _check_sampling(num_samples, temperature, top_k, s)
        if max_tokens is not None and max_tokens == 0:
            return [[Completion([], [], [] if logprobs else None, "length") for _ in range(num_samples)]
                    for _ in prompt_ids]
        terminal = self.tokenizer.terminal_ids()
        requests = []
        try:
            for ids, s in zip(prompt_ids, seeds):
                requests.append(_Request(self.model, ids, num_samples, self._max_tokens(max_tokens), temperature,
                                         top_k, s, logprobs))
            lib, pending = _lib.lib(), list(reversed(requests))
            while pending:  # requests finish roughly in order: look at the oldest only
                if lib.nc_request_done(pending[-1]._h):
                    pending.pop()
                else:
                    _step(self.model)
            out = []
            for r in requests:
                r.sync()
                out.append([_completion(r, i, terminal) for i in range(num_samples)])
            return out
        finally:
            for r in requests:
                r.free()


def _completion(req, i, terminal):
    tokens, masks = req.tokens[i], req.masks[i]
    lps = req.logprobs[i] if req.logprobs is not None else None
    stopped = req.finish[i] == "stop" and tokens and tokens[-1] in terminal
    end = len(tokens) - 1 if stopped else len(tokens)
    return Completion(tokens[:end], masks[:end], lps[:end] if lps is not None else None,
                      "stop" if stopped else "length")


_WEIGHTS = ("bf16", "int8", "fp8")
_KV_CACHES = ("bf16", "fp8")


def _device_name(device):
    """"cpu", "cuda" or "auto" from a string or torch.device ("cuda:0")."""
    name = str(device) if device is not None else "auto"
    base, _, index = name.partition(":")
    if index not in ("", "0"):
        raise ValueError(f"device {name!r}: only the first GPU (cuda or cuda:0) is used")
    return base


def load(path_or_model_name=None, device="auto", weights=None, *, kv_cache=None, tokenizer=None, max_batch=None,
         kv_blocks=None, max_context=None, threads=None, progress=True, random=None, deterministic=False):
    """Loads a model and returns its Engine (with .model and .tokenizer).

    path_or_model_name: a checkpoint directory, a nanochat base directory
    (~/.cache/nanochat), a flat or Hugging Face download, or "hf:OWNER/NAME
    [@REVISION][/SUBDIR]" (downloaded once into huggingface_hub's cache);
    None: $NANOCHAT_MODEL, else the bundled picochat.
    device: "auto" (the GPU when usable), "cpu" or "cuda".
    weights: None (as the checkpoint stores them), "bf16" (the checkpoint's
    own float weights), "int8" or "fp8" (8-bit with one scale per row,
    quantised at load; docs/quantization.md). kv_cache: "bf16" (default) or
    "fp8".
    max_batch: rows decoding together over all requests (default 8);
    kv_blocks: the KV cache in 64-position blocks (default: max_batch + 2
    full contexts); max_context: tokens per sequence (default: the model's);
    threads: CPU threads (default: all cores); progress: an hf: download's
    progress on stderr. Ctrl-C during a download stops it (resumable).
    random: "d34" (or d20, d26, d32, "L,C,H[,Hkv[,V]]") instead of a path:
    random weights of that shape, for benchmarks.
    deterministic: a request's tokens do not depend on the requests running
    beside it or on how its prompt was chunked, and repeat from run to run
    (CUDA: batch-invariant kernels, slower; the CPU backend always is)."""
    if weights is not None and weights not in _WEIGHTS:
        raise ValueError(f"weights must be 'bf16', 'int8' or 'fp8', got {weights!r}")
    if kv_cache is not None and kv_cache not in _KV_CACHES:
        raise ValueError(f"kv_cache must be 'bf16' or 'fp8', got {kv_cache!r}")
    opts = _lib.EngineOptions()
    opts.model_path = None if path_or_model_name is None else str(path_or_model_name).encode()
    opts.tokenizer_path = None if tokenizer is None else str(tokenizer).encode()
    opts.random = None if random is None else str(random).encode()
    opts.weights = None if weights is None else weights.encode()
    opts.kv_cache = None if kv_cache is None else kv_cache.encode()
    opts.deterministic = int(bool(deterministic))
    opts.device = _device_name(device).encode()
    opts.threads = threads or 0
    opts.max_context = max_context or 0
    opts.max_batch = max_batch or 0
    opts.kv_blocks = kv_blocks or 0
    opts.progress = int(bool(progress))
    stop = ctypes.c_int(0)
    opts.interrupt = ctypes.pointer(stop)
    lib = _lib.lib()
    result = {}

    def open_engine():  # on a thread of its own, so Ctrl-C reaches Python meanwhile
        result["handle"] = lib.nc_engine_open(ctypes.byref(opts))
        result["error"] = _lib.last_error()

    worker = threading.Thread(target=open_engine, name="nanochat_c.load", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        stop.value = 1
        worker.join()
        if result.get("handle"):
            lib.nc_engine_close(result["handle"])
        raise
    if not result.get("handle"):
        raise NanochatError(result.get("error") or "nc_engine_open failed")
    return Engine(Model(result["handle"]))
