"""The accelerator rule, checked once in box/qemu.py: kvm or tcg when asked for, else the probe."""

from __future__ import annotations

import pytest
from invoke.exceptions import Exit

from box import qemu
from box.tasks import build


@pytest.fixture
def probe_says(monkeypatch):
    """Make the KVM probe answer `answer` (and count its calls) instead of booting QEMU."""
    calls = []

    def install(answer: str) -> list[str]:
        def probe(seconds: float = 2.0) -> str:
            calls.append(answer)
            return answer

        monkeypatch.setattr(qemu, "probe_accelerator", probe)
        return calls

    return install


@pytest.mark.parametrize("asked", ["kvm", "tcg"])
def test_an_accelerator_asked_for_is_used_without_probing(probe_says, asked):
    calls = probe_says("tcg" if asked == "kvm" else "kvm")

    assert qemu.choose_accelerator(asked) == asked
    assert calls == []


def test_no_accelerator_asked_for_takes_what_the_probe_finds(probe_says):
    calls = probe_says("tcg")

    assert qemu.choose_accelerator("") == "tcg"
    assert qemu.choose_accelerator() == "tcg"
    assert len(calls) == 2


@pytest.mark.parametrize("asked", ["hvf", "KVM", "kvm,tcg", "whpx"])
def test_an_unknown_accelerator_is_refused_with_the_fix_before_any_probe(probe_says, asked):
    calls = probe_says("kvm")

    with pytest.raises(qemu.AcceleratorError, match="use kvm or tcg, or leave it out to probe"):
        qemu.choose_accelerator(asked)
    assert calls == []


def test_the_build_tasks_refuse_an_unknown_accelerator_flag_in_the_words_users_know():
    with pytest.raises(Exit) as refused:
        build._accelerator_flag("hvf")

    assert str(refused.value.message) == "--accelerator 'hvf': use kvm or tcg, or leave it out to probe"
    build._accelerator_flag("")  # probe later: accepted
    build._accelerator_flag("tcg")
