"""Where bearer tokens come from: a file and/or an environment value, read once in `main()`.

Tokens never travel on argv (which `ps` shows to every user). The check itself, in constant time, is
`serving.interceptors.BearerTokenInterceptor`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MIN_TOKEN_CHARS", "load_tokens"]

# Shorter secrets are guessable online; 16 characters of a random token are ~96 bits.
MIN_TOKEN_CHARS = 16


def load_tokens(token_file: Path | None, env_value: str | None) -> tuple[str, ...]:
    """Accepted tokens: one per line of `token_file` (blank lines and `#` comments skipped) plus the
    comma-separated `env_value`. Refuses short tokens and a file that names none, so a typo cannot turn
    authentication off or on with a trivial secret."""
    tokens: list[str] = []
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"auth token file {token_file}: cannot read ({exc.strerror})") from exc
        from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise ValueError(f"auth token file {token_file}: no tokens (one per line)")
        tokens.extend(from_file)
    tokens.extend(t.strip() for t in (env_value or "").split(",") if t.strip())
    for index, token in enumerate(tokens):
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(
                f"auth token #{index + 1}: must be >= {MIN_TOKEN_CHARS} characters without whitespace "
                f"(got {len(token)} characters)"
            )
    return tuple(dict.fromkeys(tokens))
