"""_ids.py: token ids from what callers hold: a list or tuple of ints, or a
NumPy array or PyTorch tensor of integers (anything with .tolist(); neither
library is imported here)."""
import numbers


def _sequence(x, what):
    """x as a Python sequence: arrays and tensors through .tolist()."""
    if hasattr(x, "tolist") and not isinstance(x, (list, tuple)):
        dtype = str(getattr(x, "dtype", ""))
        if dtype and "int" not in dtype:
            raise TypeError(f"{what} must hold integers, got an array of {dtype}")
        x = x.tolist()
    if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
        raise TypeError(f"{what} must be a list of token ids, got {type(x).__name__}")
    return x


def as_ids(tokens, what="tokens"):
    """A list of Python ints; TypeError for anything else (floats, strings,
    nested sequences). Range checks are the C library's."""
    out = []
    for t in _sequence(tokens, what):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{what} must be a list of ints, found {t!r} ({type(t).__name__})")
        out.append(int(t))
    return out


def as_prompts(prompts):
    """A list of id lists from a list of sequences or a 2-D array / tensor."""
    return [as_ids(p, f"prompts[{i}]") for i, p in enumerate(_sequence(prompts, "prompts"))]
