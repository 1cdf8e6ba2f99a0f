"""`python -m workers.ops.devenv > .env`: the keys it prints start every process (docker-compose.yml
reads them from `.env`), and survive the trip through a `.env` file."""
from __future__ import annotations

import io

from dotenv import dotenv_values

from shared.secrets import process_problems
from workers import WORKERS
from workers.ops.devenv import dev_keys, env_lines, main


def test_the_printed_keys_pass_every_start_up_check(capsys):
    main()
    printed = capsys.readouterr().out
    env = dotenv_values(stream=io.StringIO(printed))
    assert printed.startswith("# development only")
    for process in ("ingress", *WORKERS):
        assert process_problems(process, env) == [], process


def test_pems_come_back_whole_from_one_line_each():
    keys = dev_keys()
    lines = env_lines(keys)
    assert all("\n" not in line for line in lines)
    read_back = dotenv_values(stream=io.StringIO("\n".join(lines)))
    assert read_back["FEED_TOKEN_PRIVATE_KEY"].strip() == keys["FEED_TOKEN_PRIVATE_KEY"].strip()
    assert read_back["FEED_TOKEN_PUBLIC_KEY"].strip() == keys["FEED_TOKEN_PUBLIC_KEY"].strip()


def test_each_run_makes_new_keys():
    assert dev_keys()["JWT_SECRET"] != dev_keys()["JWT_SECRET"]
