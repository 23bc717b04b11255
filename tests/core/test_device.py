def test_tune_malloc_applies_where_the_c_library_is_glibc():
    import platform
    import sys

    from slimseg.device import tune_malloc

    assert tune_malloc() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_import_asks_torch_for_huge_pages_unless_the_user_said_otherwise():
    import os
    import subprocess
    import sys

    code = "import os, slimseg; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    for given, expected in ((None, "1"), ("0", "0")):
        e = env if given is None else {**env, "THP_MEM_ALLOC_ENABLE": given}
        out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected
