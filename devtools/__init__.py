"""Developer tools outside the product: `make demo` and the private etcd launcher the demo,
the tests and the benchmarks start. The product never imports this package.
"""
