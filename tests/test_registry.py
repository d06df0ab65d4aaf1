"""Every registered property names at least one wrong implementation, every name resolves,
and every wrong implementation is used by some property (none is dead weight)."""

from properties import registry


def test_every_property_has_a_meta_test_and_every_wrong_impl_is_used():
    mods = registry.modules()
    assert {m.__name__ for m in mods} == set(registry.MODULES)
    for m in mods:
        used = set()
        for p in m.PROPERTIES:
            assert p.rejects, f"{m.__name__}.{p.name} names no wrong implementation"
            missing = [b for b in p.rejects if b not in m.WRONG]
            assert not missing, f"{m.__name__}.{p.name}: unknown wrong implementations {missing}"
            used.update(p.rejects)
        assert used == set(m.WRONG), f"{m.__name__}: unused wrong implementations {set(m.WRONG) - used}"


def test_every_property_kind_is_declared_by_its_module():
    for m in registry.modules():
        assert {p.kind for p in m.PROPERTIES} <= {k.name for k in m.KINDS}, m.__name__


def test_property_names_are_unique():
    names = [p.name for p in registry.all_properties()]
    assert len(names) == len(set(names))
