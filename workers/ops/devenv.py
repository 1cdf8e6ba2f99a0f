"""Development-only keys for a fresh `.env`, printed as its lines: `python -m workers.ops.devenv > .env`.

`workers dev` writes the same keys into `.env` on its first run; this is for a machine that runs
the system another way (docker-compose.yml reads them from `.env`, and the image can print them:
docker/operations docs). Random each time, so nothing here is a secret anyone shares; never
commit the file they go to (it is in .gitignore).
"""
from __future__ import annotations

import secrets
import sys

from shared.feedtokens import generate_keypair

DEV_ISSUER_AUDIENCE = "spotter-dev"  # what `workers dev` writes and `workers token` puts in its tokens


def dev_keys() -> dict[str, str]:
    """Every key the ingress and the workers require, fresh: HS256 bearer tokens, event ids, feed tokens."""
    private, public = generate_keypair()
    return {
        "JWT_ALGORITHM": "HS256",
        "JWT_SECRET": secrets.token_urlsafe(32),
        "JWT_ISSUER": DEV_ISSUER_AUDIENCE,
        "JWT_AUDIENCE": DEV_ISSUER_AUDIENCE,
        "EVENT_ID_KEY": secrets.token_urlsafe(32),
        "FEED_TOKEN_PRIVATE_KEY": private,
        "FEED_TOKEN_PUBLIC_KEY": public,
    }


def env_lines(keys: dict[str, str]) -> list[str]:
    """`.env` lines; a PEM on one double-quoted line with `\\n` escapes, which both python-dotenv
    (`workers dev`, `workers token`) and Docker Compose turn back into newlines."""
    lines = ["# development only (workers/ops/devenv.py): never commit, never use in production"]
    for name, value in keys.items():
        if "\n" in value.strip():
            lines.append(f'{name}="{value.strip()}"'.replace("\n", "\\n"))
        else:
            lines.append(f"{name}={value}")
    return lines


def main() -> None:
    sys.stdout.write("\n".join(env_lines(dev_keys())) + "\n")


if __name__ == "__main__":
    main()
