"""Planning `apply`: only what changed is restarted; removed mirrors stop, their cache stays."""

from registry_cache.plan import make_plan
from registry_cache.record import MirrorRecord
from registry_cache.render import RenderedMirror


def mirror(name, text="a"):
    record = MirrorRecord(name=name, upstream="https://ghcr.io", listen="0.0.0.0", port=5000, storage="/c")
    return RenderedMirror(record=record, configs={"proxy.yml": text})


def test_nothing_changed_keeps_every_mirror_running():
    plan = make_plan({"a": mirror("a")}, {"a": mirror("a").files})
    assert (plan.add, plan.update, plan.keep, plan.remove) == ([], [], ["a"], [])
    assert not plan.changes


def test_a_new_mirror_is_added_and_the_old_one_left_alone():
    plan = make_plan({"a": mirror("a"), "b": mirror("b")}, {"a": mirror("a").files})
    assert (plan.add, plan.update, plan.keep, plan.remove) == (["b"], [], ["a"], [])


def test_a_changed_config_restarts_only_that_mirror():
    plan = make_plan({"a": mirror("a", "new"), "b": mirror("b")},
                     {"a": mirror("a").files, "b": mirror("b").files})
    assert (plan.update, plan.keep) == (["a"], ["b"])


def test_a_mirror_gone_from_the_config_is_removed():
    plan = make_plan({}, {"a": mirror("a").files})
    assert plan.remove == ["a"]
    assert plan.lines() == [
        "remove a: not in this config (it came from an earlier config or the box's built-in "
        "default): stopped; its cached data stays"]


def _with(rendered, **changes):
    import dataclasses

    return dataclasses.replace(rendered, record=dataclasses.replace(rendered.record, **changes))


def test_a_new_size_cap_or_warm_list_rewrites_the_record_without_a_restart():
    for changes in ({"max_size": 50_000_000_000}, {"cache_max_size": 10**9},
                    {"warm": ({"image": "library/alpine:3"},)}):
        plan = make_plan({"a": _with(mirror("a"), **changes)}, {"a": mirror("a").files})
        assert (plan.refresh, plan.update, plan.keep) == (["a"], [], []), changes
        assert plan.changes
        assert plan.lines() == ["refresh a: size cap, warm list or the endpoint's routes changed: rewritten, "
                                "left running"]


def test_a_new_port_with_a_new_cap_still_restarts_the_mirror():
    plan = make_plan({"a": _with(mirror("a"), port=5001, max_size=10**9)}, {"a": mirror("a").files})
    assert (plan.update, plan.refresh) == (["a"], [])


def _endpoint(rendered, table):
    import dataclasses

    return dataclasses.replace(rendered, public_files={"endpoint.json": table},
                               record=dataclasses.replace(rendered.record, is_endpoint=True))


def test_new_routes_of_the_one_endpoint_are_rewritten_without_restarting_its_mirror():
    plan = make_plan({"a": _endpoint(mirror("a"), "two mirrors")}, {"a": _endpoint(mirror("a"), "one").files})
    assert (plan.refresh, plan.update) == (["a"], [])


def test_a_mirror_that_becomes_the_endpoint_restarts():
    plan = make_plan({"a": _endpoint(mirror("a"), "table")}, {"a": mirror("a").files})
    assert (plan.refresh, plan.update) == ([], ["a"])
