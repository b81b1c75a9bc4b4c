"""corral's tests, one folder per kind (unit, etcd, lab, real, parity) and shared
helpers in `tests.support`.
"""
