"""Feed passcodes are kept only as salted scrypt hashes (workers/settings/passcodes.py)."""
from __future__ import annotations

import pytest

from workers.settings import passcodes


@pytest.fixture(scope="module")
def stored() -> str:
    return passcodes.hash_passcode("open sesame 42")


def test_the_right_passcode_checks_and_a_wrong_one_does_not(stored):
    assert passcodes.check_passcode("open sesame 42", stored)
    assert not passcodes.check_passcode("open sesame 43", stored)
    assert not passcodes.check_passcode("", stored)


def test_the_stored_form_names_its_parameters_and_never_holds_the_passcode(stored):
    scheme, log2_n, r, p, salt, digest = stored.split("$")
    assert (scheme, log2_n, r, p) == ("scrypt", "14", "8", "1")
    assert "open sesame" not in stored


def test_each_hash_has_its_own_salt(stored):
    again = passcodes.hash_passcode("open sesame 42")
    assert again != stored and again.split("$")[4] != stored.split("$")[4]
    assert passcodes.check_passcode("open sesame 42", again)


def test_a_hash_made_with_other_parameters_still_checks(monkeypatch):
    monkeypatch.setattr(passcodes, "LOG2_N", 10)
    cheaper = passcodes.hash_passcode("1234")
    monkeypatch.undo()
    assert cheaper.split("$")[1] == "10"
    assert passcodes.check_passcode("1234", cheaper) and not passcodes.check_passcode("1235", cheaper)


def test_an_unknown_scheme_is_an_error_not_a_match():
    with pytest.raises(ValueError, match="unknown passcode hash scheme"):
        passcodes.check_passcode("x", "bcrypt$1$2$3$c2FsdA==$ZGlnZXN0")
