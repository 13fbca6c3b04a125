"""What the tests and the benchmarks share, so that neither imports the other; not installed
with the product (nothing in vicreg/ or sweeps/ imports it).

  postgres - a throwaway PostgreSQL cluster on loopback
  learning - the quick learning check: a few epochs on real images against the untrained encoder
"""
