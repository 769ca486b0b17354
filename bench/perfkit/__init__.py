"""The pieces of ``bench/run_all.py``: measuring, generated repositories, the scenarios of the
performance table, the checks that must keep passing, and the report."""
