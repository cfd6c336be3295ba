"""nanochat_c: nanochat's Engine interface on nanochat-c, the C/CUDA
inference engine for nanochat models. Switching a nanochat script is one
import:

    import nanochat_c
    engine = nanochat_c.load("hf:karpathy/nanochat-d32")   # or a checkpoint folder
    tokenizer = engine.tokenizer
    prompt = tokenizer.render_for_completion(conversation)
    results, masks = engine.generate_batch(prompt, num_samples=4, max_tokens=256, temperature=1.0, top_k=50)
    for column, column_masks in engine.generate(prompt, max_tokens=64): ...
    batches = engine.generate_many(prompts, num_samples=4, max_tokens=128, logprobs=True)

The C library (libnanochat.so) does the work; this package only declares
it for ctypes (docs/python.md)."""
from ._lib import NanochatError
from .engine import Completion, Config, Engine, Model, load
from .tokenizer import Tokenizer

__version__ = "0.2.0"
__all__ = ["load", "Engine", "Model", "Tokenizer", "Completion", "Config", "NanochatError"]
