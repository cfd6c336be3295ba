"""tokenizer.py: nanochat's tokenizer interface (nanochat/tokenizer.py:
encode, decode, encode_special, get_bos_token_id, render_conversation,
render_for_completion, ...) on the tokenizer the C library loaded with the
model, so prompts and transcripts are made exactly as the engine sees them.

Encoding and decoding are the library's (nanochat's BPE and its split
regex); the chat rendering is written here over them, following nanochat's
rules: <|bos|>, then user turns between <|user_start|> / <|user_end|> and
assistant turns between <|assistant_start|> / <|assistant_end|> (mask 1 on
what the assistant says, 0 elsewhere), tool calls between
<|python_start|> / <|python_end|> (supervised) and their outputs between
<|output_start|> / <|output_end|> (not supervised), a leading system
message merged into the first user message.
"""
import ctypes
import copy

from . import _lib
from ._ids import as_ids

SPECIAL_TOKENS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
                  "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"]


class Tokenizer:
    """The tokenizer of a loaded model (from nanochat_c.load(...).tokenizer)."""

    def __init__(self, model):
        self._model = model
        self._special = {}

    # ---- the vocabulary

    def get_vocab_size(self):
        return self._model.info.tokenizer_vocab_size

    def get_special_tokens(self):
        return {name for name in SPECIAL_TOKENS if self._special_id(name) is not None}

    def _special_id(self, text):
        if text not in self._special:
            tid = _lib.lib().nc_engine_special_token(self._model.handle(), text.encode())
            self._special[text] = tid if tid >= 0 else None
        return self._special[text]

    def encode_special(self, text):
        """The id of a special token such as "<|assistant_end|>" (KeyError if
        this tokenizer has none of that name, as tiktoken raises)."""
        tid = self._special_id(text)
        if tid is None:
            raise KeyError(text)
        return tid

    def terminal_ids(self):
        """The ids that end a row (<|assistant_end|>, <|bos|>) this tokenizer has."""
        return {t for t in (self._special_id("<|assistant_end|>"), self._special_id("<|bos|>")) if t is not None}

    def get_bos_token_id(self):
        return self.encode_special("<|bos|>")

    def id_to_token(self, id):
        return self.decode([id])

    # ---- text <-> ids

    def _encode_one(self, text):
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        data = text.encode("utf-8", "surrogatepass")
        lib, h = _lib.lib(), self._model.handle()
        cap = len(data) + 16  # a token covers at least one byte
        buf = (ctypes.c_int32 * cap)()
        n = lib.nc_engine_tokenize(h, data, len(data), buf, cap)
        if n < 0:
            _lib.fail()
        return buf[:n]

    def encode(self, text, prepend=None, append=None, num_threads=8):
        """Ordinary text to ids (special-token text stays plain text); a list
        of strings gives a list of id lists. prepend / append: an id or a
        special token's text added to each."""
        pre = None if prepend is None else (prepend if isinstance(prepend, int) else self.encode_special(prepend))
        post = None if append is None else (append if isinstance(append, int) else self.encode_special(append))

        def one(s):
            ids = self._encode_one(s)
            return ([pre] if pre is not None else []) + ids + ([post] if post is not None else [])

        if isinstance(text, str):
            return one(text)
        if isinstance(text, list):
            return [one(s) for s in text]
        raise ValueError(f"Invalid input type: {type(text)}")

    __call__ = encode

    def decode(self, ids):
        """Ids to text as nanochat's decode (special tokens as their text,
        invalid UTF-8 as U+FFFD)."""
        ids = as_ids(ids)
        arr = (ctypes.c_int32 * len(ids))(*ids)
        lib, h = _lib.lib(), self._model.handle()
        n = lib.nc_engine_detokenize(h, arr, len(ids), None, 0)
        if n < 0:
            _lib.fail()
        buf = ctypes.create_string_buffer(n + 1)
        lib.nc_engine_detokenize(h, arr, len(ids), buf, n + 1)
        return buf.raw[:n].decode("utf-8", "replace")

    # ---- chat rendering (nanochat's RustBPETokenizer.render_conversation)

    def render_conversation(self, conversation, max_tokens=2048):
        """(ids, mask) of a conversation {"messages": [...]}: mask 1 on the
        tokens the assistant is trained to produce. Truncated to max_tokens."""
        ids, mask = [], []

        def add(token_ids, m):
            if isinstance(token_ids, int):
                token_ids = [token_ids]
            ids.extend(token_ids)
            mask.extend([m] * len(token_ids))

        messages = conversation["messages"]
        if messages and messages[0]["role"] == "system":
            if len(messages) < 2 or messages[1]["role"] != "user":
                raise ValueError("System message must be followed by a user message")
            merged = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
            messages = [merged] + list(messages[2:])
        if not messages:
            raise ValueError(f"Conversation has less than 1 message: {messages}")
        sp = self.encode_special
        add(self.get_bos_token_id(), 0)
        for i, message in enumerate(messages):
            must_be = "user" if i % 2 == 0 else "assistant"
            if message["role"] != must_be:
                raise ValueError(f"Message {i} is from {message['role']} but should be from {must_be}")
            content = message["content"]
            if must_be == "user":
                if not isinstance(content, str):
                    raise ValueError("User messages are simply expected to be strings")
                add(sp("<|user_start|>"), 0)
                add(self.encode(content), 0)
                add(sp("<|user_end|>"), 0)
                continue
            add(sp("<|assistant_start|>"), 0)
            if isinstance(content, str):
                add(self.encode(content), 1)
            elif isinstance(content, list):
                for part in content:
                    value = self.encode(part["text"])
                    if part["type"] == "text":
                        add(value, 1)
                    elif part["type"] == "python":
                        add(sp("<|python_start|>"), 1)
                        add(value, 1)
                        add(sp("<|python_end|>"), 1)
                    elif part["type"] == "python_output":
                        add(sp("<|output_start|>"), 0)
                        add(value, 0)
                        add(sp("<|output_end|>"), 0)
                    else:
                        raise ValueError(f"Unknown part type: {part['type']}")
            else:
                raise ValueError(f"Unknown content type: {type(content)}")
            add(sp("<|assistant_end|>"), 1)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation):
        """The conversation without its last (assistant) message, followed by
        <|assistant_start|>: the prompt for sampling the assistant's reply."""
        conversation = copy.deepcopy(conversation)
        messages = conversation["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("Last message must be from the Assistant")
        messages.pop()
        ids, _ = self.render_conversation(conversation)
        ids.append(self.encode_special("<|assistant_start|>"))
        return ids
