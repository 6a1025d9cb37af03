"""Process set-up (mammoprep/runtime.py): the garbage-collection pause and the BLAS
thread count, in fresh interpreters where the state of this one would hide them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env={**clean, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_start_up_leaves_a_disabled_collector_alone():
    import gc

    from mammoprep.runtime import start_up, started

    was = gc.isenabled()
    try:
        gc.disable()
        start_up()
        started()
        assert not gc.isenabled()        # the caller turned it off: it stays off
        gc.enable()
        start_up()
        assert not gc.isenabled()
        started()
        started()                        # twice: harmless
        assert gc.isenabled()
    finally:
        gc.enable() if was else gc.disable()


def test_one_blas_thread_only_before_numpy_and_never_over_the_user():
    out = _child("""
        import os
        from mammoprep.runtime import BLAS_THREAD_VARIABLES, one_blas_thread
        assert one_blas_thread()
        print([os.environ[v] for v in BLAS_THREAD_VARIABLES])
        import numpy
        os.environ.pop("BLIS_NUM_THREADS")
        print(one_blas_thread(), "BLIS_NUM_THREADS" in os.environ)
    """, MKL_NUM_THREADS="3")
    first, second = out.splitlines()
    assert first == "['1', '3', '1']"         # the user's MKL choice stays
    assert second == "False False"             # NumPy loaded: too late, nothing changed


def test_console_script_asks_for_one_blas_thread_and_calls_from_code_do_not():
    lines = _child("""
        import os, sys
        import mammoprep.cli as cli
        import mammoprep.runtime as R
        one = R.one_blas_thread
        def traced():
            got = one()
            print("asked", got, os.environ.get("OPENBLAS_NUM_THREADS"), flush=True)
            return got
        R.one_blas_thread = traced
        try:
            cli.main(["--version"])          # a caller's main([...]): left alone
        except SystemExit:
            print("called", os.environ.get("OPENBLAS_NUM_THREADS"), flush=True)
        sys.argv = ["mammoprep", "--version"]
        cli.main()                           # the console script's path
    """).splitlines()
    assert [x for x in lines if x.startswith(("asked", "called"))] == ["called None",
                                                                       "asked True 1"]


def test_pool_forks_only_from_a_process_without_threads_or_numba():
    # a fork after GNU OpenMP (Numba's kernels) has run aborts the child, and one from a
    # process with other threads may inherit a held lock: spawn then
    out = _child("""
        import sys, threading, time
        from mammoprep.commands.harmonize import start_method
        print(start_method())
        t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()
        print(start_method()); t.join()
        import numba
        print(start_method())
    """)
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert out.splitlines() == [expected, "spawn", "spawn"]
