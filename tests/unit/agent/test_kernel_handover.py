"""handover.kernel: the nftables ruleset that hands a mirror's port to the registry on duty (planned only)."""

import pytest
from registry_cache.handover import kernel


def _rules(script: str, chain: str) -> list[str]:
    """The rule lines of `chain` in a planned script."""
    body = script.split(f"chain {chain} {{", 1)[1].split("\n    }", 1)[0]
    return [line.strip() for line in body.splitlines()[2:] if line.strip()]


def test_the_plan_replaces_the_ports_own_table_in_one_transaction():
    script = kernel.plan(5001, "0.0.0.0", 40001, [40002])
    lines = script.splitlines()
    # declare (so the delete cannot fail on a first start), delete (a stale table too), declare anew
    assert lines[:3] == ["table inet registry_cache_5001", "delete table inet registry_cache_5001",
                         "table inet registry_cache_5001 {"]
    assert script.count("table inet") == 3 and "flush ruleset" not in script


def test_new_connections_from_this_host_and_from_outside_go_to_the_registry_on_duty():
    script = kernel.plan(5001, "0.0.0.0", 40001, [])
    for chain, hook in (("prerouting", "prerouting priority dstnat"), ("output", "output priority -100")):
        assert f"type nat hook {hook};" in script
        assert _rules(script, chain) == [
            "meta nfproto ipv4 fib daddr type local tcp dport 5001 redirect to :40001"]


@pytest.mark.parametrize(("listen", "match"), [
    ("0.0.0.0", "meta nfproto ipv4 fib daddr type local"),
    ("::", "fib daddr type local"),
    ("127.0.0.1", "ip daddr 127.0.0.1"),
    ("192.168.56.50", "ip daddr 192.168.56.50"),
    ("fd00::50", "ip6 daddr fd00::50"),
])
def test_the_redirect_takes_only_connections_to_the_mirrors_listen_address(listen: str, match: str):
    rules = _rules(kernel.plan(5001, listen, 40001, []), "output")
    assert rules == [f"{match} tcp dport 5001 redirect to :40001"]


def test_every_live_registrys_private_port_is_reached_only_from_lo_or_through_the_redirect():
    rules = _rules(kernel.plan(5001, "::", 40003, [40001, 40003]), "input")
    assert rules == ["tcp dport { 40001, 40003 } iif lo accept",
                     "tcp dport { 40001, 40003 } ct status dnat accept",
                     "tcp dport { 40001, 40003 } drop"]


def test_a_switch_is_the_same_table_pointing_elsewhere():
    before = kernel.plan(5001, "0.0.0.0", 40001, [40001])
    after = kernel.plan(5001, "0.0.0.0", 40002, [40001, 40002])
    assert "redirect to :40002" in after and "redirect to :40001" not in after
    assert before.splitlines()[:3] == after.splitlines()[:3]


def test_removal_deletes_the_ports_table_and_succeeds_when_there_is_none():
    assert kernel.plan_removal(5002) == ("table inet registry_cache_5002\n"
                                         "delete table inet registry_cache_5002\n")


def test_the_relay_is_kept_when_the_environment_asks_for_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(kernel.HANDOVER_ENV, raising=False)
    assert kernel.wanted()
    monkeypatch.setenv(kernel.HANDOVER_ENV, "relay")
    assert not kernel.wanted()


def _held(monkeypatch: pytest.MonkeyPatch) -> tuple[kernel.KernelHandover, list[str]]:
    """A port held by the kernel whose nft scripts are recorded instead of run."""
    scripts: list[str] = []
    monkeypatch.setattr(kernel, "apply", scripts.append)
    return kernel.KernelHandover("0.0.0.0", 5001), scripts


def test_a_retired_registrys_port_stays_guarded_until_it_has_stopped(monkeypatch: pytest.MonkeyPatch):
    held, scripts = _held(monkeypatch)
    held.claim()
    held.point_to(40001)
    held.point_to(40002)  # the switch: the retired registry still finishes its pulls on 40001
    assert _rules(scripts[-1], "input")[0] == "tcp dport { 40001, 40002 } iif lo accept"
    held.forget(40001)
    assert "redirect to :40002" in scripts[-1]
    assert _rules(scripts[-1], "input")[0] == "tcp dport { 40002 } iif lo accept"


def test_a_registry_that_died_on_duty_leaves_the_guard_with_its_successor(monkeypatch: pytest.MonkeyPatch):
    held, scripts = _held(monkeypatch)
    held.point_to(40001)
    held.forget(40001)  # it exited by itself: nothing to switch to yet
    held.point_to(40002)
    assert _rules(scripts[-1], "input")[0] == "tcp dport { 40002 } iif lo accept"


def test_closing_deletes_the_table_once(monkeypatch: pytest.MonkeyPatch):
    held, scripts = _held(monkeypatch)
    held.point_to(40001)
    held.close()
    held.close()
    held.forget(40001)
    assert scripts[1:] == [kernel.plan_removal(5001)]
