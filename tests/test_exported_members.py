import edge_bge


def test_all_is_exact():
    public = {name for name in dir(edge_bge) if not name.startswith("_")}
    modules = {"annotations", "batching", "bundle", "embedder", "errors", "manifest", "providers", "tokenize", "cli"}
    assert set(edge_bge.__all__) - {"__version__"} == public - modules
    for name in edge_bge.__all__:
        assert getattr(edge_bge, name) is not None
