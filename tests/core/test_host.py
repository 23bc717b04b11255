import os
import subprocess
import sys


def test_tune_malloc_applies_where_the_c_library_is_glibc():
    import platform

    from slimseg.host import tune_malloc

    assert tune_malloc() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def _env_after(code: str, given: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    out = subprocess.run([sys.executable, "-c", code + "\nprint(os.environ.get('THP_MEM_ALLOC_ENABLE', '-'))"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_importing_slimseg_leaves_the_process_alone():
    assert _env_after("import os, slimseg, slimseg.training, slimseg.predict", None) == "-"


def test_tune_process_asks_torch_for_huge_pages_unless_the_user_said_otherwise():
    code = "import os; from slimseg.host import tune_process; tune_process()"
    assert _env_after(code, None) == "1"
    assert _env_after(code, "0") == "0"


def test_the_cli_entry_point_tunes_its_process():
    code = "import os, contextlib\nfrom slimseg.cli import main\nwith contextlib.suppress(SystemExit): main(['--version'])"
    assert _env_after(code, None) == "1"
