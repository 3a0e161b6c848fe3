"""Secrets are named, never written: the rule for an environment variable NAME.

Agents files and tool configs reference keys by the name of the variable that holds them;
a value that looks like a key (a pasted secret) is refused, and the error never repeats it.

Example:
    >>> check_env_name("ANTHROPIC_API_KEY")
    'ANTHROPIC_API_KEY'
"""

import re
from collections.abc import Mapping

# An environment variable NAME; anything else (a pasted key above all) is refused.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
# What a key looks like rather than a name: a known key prefix, or a long run of letters and
# digits with no underscore (names are words joined by `_`; keys are random strings).
_KEY_LIKE = re.compile(r"^(sk-|sk_|pk-|rk-|xox|ghp_|gho_|glpat-|AKIA|AIza|ya29\.)|"
                       r"[A-Za-z0-9]{20,}")


def check_env_name(value: str | None) -> str | None:
    """`value` if it is an environment variable NAME; ValueError if it looks like a key or is
    not a name. The message never repeats the value: it may be a real key pasted by mistake.

    Example:
        >>> check_env_name("ANTHROPIC_API_KEY")
        'ANTHROPIC_API_KEY'
    """
    if value is None:
        return None
    if _KEY_LIKE.search(value):
        raise ValueError("looks like an API key, not the NAME of an environment variable; put "
                         "the key in the environment and write its variable name here (e.g. "
                         "ANTHROPIC_API_KEY)")
    if not _ENV_NAME.match(value):
        raise ValueError("must be an environment variable name: A-Z, 0-9 and _, not starting "
                         "with a digit, at most 64 characters")
    return value


def key_from_env(environ: Mapping[str, str], name: str | None, what: str) -> str:
    """The secret held by the variable `name` ("" when no name is configured); a name that
    is set in the config but not in the environment is a ValueError saying what to set.

    Example:
        >>> key_from_env({"OAI": "k"}, "OAI", "deployment 'gpt'")
        'k'
        >>> key_from_env({}, None, "embedding (ollama)")
        ''
    """
    if not name:
        return ""
    key = environ.get(name, "")
    if not key:
        raise ValueError(f"{what} needs its API key: set the environment variable {name}")
    return key
