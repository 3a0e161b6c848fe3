"""Token counts: a cheap estimate for display and retrieval, and a bound for budgets.

`estimate_tokens` counts word pieces and punctuation, which tracks BPE token counts closely
enough on English prose (within ~30 %) for retrieval budgets, the cacheable-length check and
what the UI shows, and never needs a network call. It is NOT an upper bound: a 90,000-char
hex blob is one `\\w+` piece, yet tens of thousands of real tokens.

`max_tokens` is the bound budgets reserve against: the UTF-8 byte length. It assumes every
provider's tokenizer emits at most one token per byte of the text it is given, which holds
for byte-level BPE (OpenAI's tiktoken, Anthropic's, Llama 3's: each token covers at least one
byte) and for SentencePiece with byte fallback (each piece covers at least one character, a
character at least one byte). Template tokens the provider adds around the text (roles, tool
framing) are not in the text; `app.agents.prefix.PromptParts.max_input_tokens` adds them.

Example:
    >>> estimate_tokens("Deploy the door, then check port 443.")
    9
    >>> max_tokens("Deploy the door, then check port 443.")
    37
    >>> estimate_tokens("ab" * 45_000), max_tokens("ab" * 45_000)
    (1, 90000)
"""

import re

_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Count word pieces and punctuation marks in `text` (a display estimate, not a bound).

    Example:
        >>> estimate_tokens("")
        0
    """
    return len(_TOKEN_PATTERN.findall(text))


def max_tokens(text: str) -> int:
    """The most tokens any byte-level tokenizer can make of `text`: its UTF-8 byte length.

    Example:
        >>> max_tokens("héllo")   # é is two bytes
        6
    """
    return len(text.encode("utf-8"))
