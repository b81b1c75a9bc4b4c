"""The tokens file is written without following a symlink planted next to it: the
old code wrote through a fixed `<file>.tmp` name with O_TRUNC, so whoever could
create that name in the directory chose which file the tokens landed in."""

from __future__ import annotations

import stat
from pathlib import Path

from orchestrator.api.auth import add_token, load_tokens
from orchestrator.roles import Role


def test_a_planted_symlink_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    tokens = tmp_path / "tokens.yaml"
    (tmp_path / "tokens.yaml.tmp").symlink_to(victim)
    add_token(tokens, name="ops", role=Role.OPERATOR)
    add_token(tokens, name="dev", role=Role.VIEWER)
    assert victim.read_text() == "keep me\n"
    assert [e.name for e in load_tokens(tokens)] == ["ops", "dev"]
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert not tokens.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tokens.yaml",
        "tokens.yaml.tmp",
        "victim",
    ]
