"""Every file slimseg writes appears whole or not at all: writers go through ``slimseg.files``.

The source is scanned for calls that write a file (``open`` for writing, ``write_text``, ``imwrite``,
``np.save``, ``savefig``, ...). Such a call is fine when it writes to a temporary name: one bound by
``with atomic_path(...) as name`` or inside a ``tempfile`` folder, or an in-memory buffer. Anything else
needs an entry in ALLOWED with the reason, so a new writer that could leave half a file fails here.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "slimseg"

# methods and functions that write a file (``write_text`` alone is slimseg.files' atomic one; Path's is a method)
WRITERS = {"write_text", "write_bytes", "imwrite", "imsave", "savefig", "save", "savez", "savez_compressed",
           "tofile", "to_csv", "save_package"}
FUNCTION_WRITERS = WRITERS - {"write_text", "save"} | {"torch.onnx.export"}
# methods named like a writer that are slimseg's own atomic writers
ATOMIC = {"io.save", "model_io.save", "ckpt_file.save", "checkpoint.save", "self.save"}
TEMPORARY = {"atomic_path", "TemporaryDirectory", "mkdtemp", "BytesIO", "StringIO"}

# (file, function) -> why it may write without a temporary name of its own
ALLOWED = {
    ("files.py", "atomic_path"): "the atomic writer itself",
    ("files.py", "write_text"): "writes the temporary name atomic_path yields",
    ("files.py", "write_labels_tiff"): "writes the temporary name atomic_path yields",
    ("io.py", "write_archive"): "writes to what its callers give: a temporary name from atomic_path, or memory",
    ("export/networks.py", "write_networks"): "writes the paths its callers give: temporary names only",
    ("export/networks.py", "write_onnx"): "writes the path write_networks gives it (a temporary name)",
    ("compress/onnx_int8.py", "export_onnx"): "writes into the temporary folder of quantize / write_onnx's path",
    ("export/card.py", "cover_image"): "writes into the temporary folder of the bioimage.io package",
    ("study/results.py", "_lock"): "the study's lock file (empty, never read)",
    ("study/results.py", "_repair_tail"): "cuts a torn last row of results.csv back to its last newline",
    ("study/results.py", "_append"): "one O_APPEND write + fsync per row; a torn row is skipped and repaired",
}


def _mode_writes(call: ast.Call, position: int, literal_only: bool = False) -> bool:
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    if not isinstance(mode, ast.Constant) or not isinstance(mode.value, str):
        return mode is not None and not literal_only  # a mode only known at run time counts as writing
    return set(mode.value) <= set("rwaxbt+") and bool(set(mode.value) & set("wax+"))  # a mode, not a member name


def _writes(call: ast.Call) -> bool:
    name = ast.unparse(call.func)
    if isinstance(call.func, ast.Name):
        return _mode_writes(call, 1) if name == "open" else name in FUNCTION_WRITERS
    if isinstance(call.func, ast.Attribute):
        attr = call.func.attr
        if name == "os.open":
            return True
        if attr == "open":  # Path.open("w"); zf.open(member) and store.open(config) read
            return _mode_writes(call, 0, literal_only=True)
        if attr == "ZipFile":
            return _mode_writes(call, 1)
        return name in FUNCTION_WRITERS or (attr in WRITERS and name not in ATOMIC)
    return False


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _temporary_names(func: ast.AST) -> set[str]:
    """Names bound to a temporary file or folder (or derived from one) inside ``func``."""
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node in ast.walk(func):
            targets, value = [], None
            if isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets, value = [node.optional_vars], node.context_expr
            elif isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            if value is None:
                continue
            called = {c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
                      for c in ast.walk(value) if isinstance(c, ast.Call)}
            if called & TEMPORARY or _names(value) & names:
                new = set().union(*(_names(t) for t in targets)) - names
                if new:
                    names |= new
                    changed = True
    return names


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def raw_writers() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text())
        for func in _functions(tree):
            if (rel, func.name) in ALLOWED:
                continue
            temporary = _temporary_names(func)
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and _writes(node):
                    f = node.func
                    receiver = f.value if isinstance(f, ast.Attribute) else None
                    used = set().union(*(_names(a) for a in node.args), *(_names(k.value) for k in node.keywords),
                                       _names(receiver) if receiver is not None else set())
                    if not used & temporary:
                        found.append(f"{rel}:{node.lineno} in {func.name}: {ast.unparse(node)[:80]}")
    return sorted(set(found))


def test_no_writer_bypasses_the_atomic_helpers():
    found = raw_writers()
    assert not found, ("write through slimseg.files (atomic_path, write_text, write_json), or add the function to "
                       "ALLOWED with the reason:\n" + "\n".join(found))


def test_the_scan_finds_a_raw_writer(tmp_path, monkeypatch):
    bad = '''
def save_labels(path, labels, table):
    import tifffile
    tifffile.imwrite(path, labels)
    open(path.with_suffix(".csv"), "w").write(table)
    path.with_suffix(".md").write_text(table)

def fine(path, data):
    from slimseg.files import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(data)
    with open(path, "rb") as fh:
        return fh.read()
'''
    (tmp_path / "bad.py").write_text(bad)
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    found = raw_writers()
    assert [f.split(" in ")[0] for f in found] == ["bad.py:4", "bad.py:5", "bad.py:6"], found


def test_every_allowed_entry_still_exists():
    present = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        present |= {(rel, f.name) for f in _functions(ast.parse(path.read_text()))}
    assert set(ALLOWED) <= present, sorted(set(ALLOWED) - present)
