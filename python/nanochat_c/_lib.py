"""_lib.py: finds libnanochat.so and declares the C API of include/nanochat.h
for ctypes (standard library only: no compiler needed to use the package).

Where the library is looked for, first found wins:
  1. $NANOCHAT_LIB (a path to the .so);
  2. beside this file (`pip install ./python` copies build/libnanochat.so
     there when it has been built);
  3. the build/ folder of the source tree this package sits in
     (python/nanochat_c/../../build), for use without installing.

ctypes releases the GIL around every call, so a long step never blocks
other Python threads, and the C API's thread-local error message is read
on the thread that made the failing call.
"""
import ctypes
import os
from ctypes import POINTER, Structure, c_char_p, c_float, c_int, c_int32, c_int64, c_size_t, c_uint8, c_uint64, c_void_p

LIB_NAME = "libnanochat.so"
API_VERSION = (0, 2)  # the header's major.minor this module was written for


class NanochatError(RuntimeError):
    """A call into the C library failed; the message is the library's own."""


class EngineOptions(Structure):
    _fields_ = [("model_path", c_char_p), ("tokenizer_path", c_char_p), ("device", c_char_p), ("threads", c_int),
                ("max_context", c_int), ("max_batch", c_int), ("kv_blocks", c_int), ("progress", c_int),
                ("interrupt", POINTER(c_int)), ("random", c_char_p), ("weights", c_char_p),
                ("kv_cache", c_char_p), ("deterministic", c_int)]


class EngineInfo(Structure):
    _fields_ = [("n_layer", c_int), ("n_embd", c_int), ("n_head", c_int), ("n_kv_head", c_int),
                ("vocab_size", c_int), ("sequence_len", c_int), ("max_context", c_int), ("n_params", c_int64),
                ("generation", c_char_p), ("source", c_char_p), ("format", c_char_p), ("device", c_char_p),
                ("tokenizer_vocab_size", c_int), ("max_batch", c_int), ("kv_blocks", c_int)]


class Message(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class Prompt(Structure):
    _fields_ = [("messages", POINTER(Message)), ("n_messages", c_size_t), ("text", c_char_p),
                ("ids", POINTER(c_int32)), ("n_ids", c_size_t)]


class GenerateOptions(Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float), ("min_p", c_float),
                ("seed", c_uint64), ("max_tokens", c_int), ("no_calculator", c_int)]


class RequestOptions(Structure):
    _fields_ = [("sampling", GenerateOptions), ("n", c_int), ("logprobs", c_int)]


# nc_reply_finish
FINISH_NAMES = {0: None, 1: "stop", 2: "length", 3: "cancelled", 4: "error"}

_SIGNATURES = {
    "nc_version": (c_char_p, []),
    "nc_engine_open": (c_void_p, [POINTER(EngineOptions)]),
    "nc_engine_close": (None, [c_void_p]),
    "nc_engine_last_error": (c_char_p, []),
    "nc_engine_get_info": (c_int, [c_void_p, POINTER(EngineInfo)]),
    "nc_engine_tokenize": (c_int64, [c_void_p, c_char_p, c_size_t, POINTER(c_int32), c_size_t]),
    "nc_engine_detokenize": (c_int64, [c_void_p, POINTER(c_int32), c_size_t, c_char_p, c_size_t]),
    "nc_engine_special_token": (c_int32, [c_void_p, c_char_p]),
    "nc_request_submit": (c_void_p, [c_void_p, POINTER(Prompt), POINTER(RequestOptions)]),
    "nc_engine_step": (c_int, [c_void_p]),
    "nc_request_rows": (c_int, [c_void_p]),
    "nc_request_done": (c_int, [c_void_p]),
    "nc_request_read": (c_int64, [c_void_p, c_int, c_size_t, POINTER(c_int32), POINTER(c_uint8), POINTER(c_float),
                                  c_size_t, POINTER(c_int)]),
    "nc_request_error": (c_char_p, [c_void_p]),
    "nc_request_cancel": (None, [c_void_p]),
    "nc_request_free": (None, [c_void_p]),
}


def _candidates():
    env = os.environ.get("NANOCHAT_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, LIB_NAME), os.path.join(here, "..", "..", "build", LIB_NAME)]


def _load():
    tried = []
    for path in _candidates():
        if not os.path.exists(path):
            tried.append(f"{path} (not there)")
            continue
        try:
            lib = ctypes.CDLL(os.path.abspath(path))
        except OSError as e:
            raise NanochatError(f"cannot load {path}: {e}") from None
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise NanochatError(f"{path} has no {name}: it is older than this package "
                                    f"(needs the C API {API_VERSION[0]}.{API_VERSION[1]}); rebuild it with make") from None
            fn.restype, fn.argtypes = restype, argtypes
        major, minor = (int(x) for x in lib.nc_version().decode().split(".")[:2])
        if major != API_VERSION[0] or minor < API_VERSION[1]:
            raise NanochatError(f"{path} is version {major}.{minor}; this package needs "
                                f"{API_VERSION[0]}.{API_VERSION[1]} or a later {API_VERSION[0]}.x")
        return lib
    raise NanochatError(f"{LIB_NAME} not found ({'; '.join(tried)}): build it with `make` in the nanochat-c "
                        "repository and set NANOCHAT_LIB to build/libnanochat.so, or reinstall the package "
                        "(pip install ./python copies build/libnanochat.so into it)")


_lib = None


def lib():
    """The loaded library (loaded on first use, so importing never fails)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def last_error():
    msg = lib().nc_engine_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def fail(what=None):
    """Raises NanochatError with the library's message for the call that just failed."""
    msg = last_error() or "unknown error"
    raise NanochatError(f"{what}: {msg}" if what else msg)
