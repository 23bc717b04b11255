def test_tune_malloc_applies_where_the_c_library_is_glibc():
    import platform
    import sys

    from slimseg.device import tune_malloc

    assert tune_malloc() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
