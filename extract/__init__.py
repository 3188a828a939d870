"""avaf.extract: decode videos, run frozen encoders on Ray, write feature-store shards."""
