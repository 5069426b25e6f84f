"""sealpool-sim: the pool's scheduling in virtual time (engine.py), measured like the real
pool (metrics.py), and the same scenario on the real broker at scaled time (real.py)."""
