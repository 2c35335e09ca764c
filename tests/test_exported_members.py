import types

import edge_bge


def test_all_is_exact():
    """Every public non-module name is in __all__, and everything in __all__ exists."""
    public = {
        name
        for name, value in vars(edge_bge).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert set(edge_bge.__all__) - {"__version__"} == public
    for name in edge_bge.__all__:
        assert getattr(edge_bge, name) is not None
